//! diesel table definitions shared by both backends (same column types in both migration trees).

diesel::table! {
    tenants (id) {
        id -> Text,
        name -> Text,
        slug -> Text,
        allow_signup -> Bool,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        limits -> Text,
        wholesale_prices -> Text,
        log_prompts -> Bool,
    }
}

diesel::table! {
    accounts (id) {
        id -> Text,
        tenant_id -> Text,
        name -> Text,
        billing_mode -> Text,
        credit_limit_nano -> BigInt,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        plan_id -> Nullable<Text>,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        tenant_id -> Nullable<Text>,
        account_id -> Nullable<Text>,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_login_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        tenant_id -> Text,
        account_id -> Text,
        created_by -> Nullable<Text>,
        name -> Text,
        prefix -> Text,
        last4 -> Text,
        secret_hash -> Text,
        previous_secret_hash -> Nullable<Text>,
        previous_valid_until -> Nullable<Timestamp>,
        scopes -> Text,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        rotated_at -> Nullable<Timestamp>,
        limits -> Text,
    }
}

diesel::table! {
    plans (id) {
        id -> Text,
        tenant_id -> Text,
        name -> Text,
        key_limits -> Text,
        account_limits -> Text,
        is_default -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        prices -> Text,
        hold_cap_nano -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        user_id -> Text,
        family_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        tenant_id -> Nullable<Text>,
        actor_user_id -> Nullable<Text>,
        actor_role -> Nullable<Text>,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        detail -> Text,
        ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_records (id) {
        id -> Text,
        fingerprint -> Text,
        status -> Text,
        response_status -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(accounts -> tenants (tenant_id));
diesel::joinable!(api_keys -> accounts (account_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, accounts, users, api_keys, plans);

diesel::table! {
    usage_records (id) {
        id -> Text,
        request_id -> Text,
        tenant_id -> Text,
        account_id -> Text,
        api_key_id -> Text,
        model -> Text,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        estimated -> Bool,
        status -> Text,
        worker -> Nullable<Text>,
        upstream -> Nullable<Text>,
        miner_uid -> Nullable<Text>,
        started_at -> Timestamp,
        ended_at -> Timestamp,
        ttft_ms -> Nullable<BigInt>,
        latency_ms -> BigInt,
        wholesale_cost_nano -> Nullable<BigInt>,
        charged_nano -> BigInt,
        tenant_charged_nano -> BigInt,
        usage_source -> Text,
        prompt_nano_per_mtok -> Nullable<BigInt>,
        completion_nano_per_mtok -> Nullable<BigInt>,
        request_nano -> Nullable<BigInt>,
        recorded_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    export_cutoffs (tenant_id, month) {
        tenant_id -> Text,
        month -> Text,
        cutoff_at -> Timestamp,
    }
}

diesel::table! {
    server_settings (name) {
        name -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    statements (account_id, month) {
        account_id -> Text,
        month -> Text,
        tenant_id -> Text,
        document -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    usage_dead_letters (id) {
        id -> Text,
        tenant_id -> Text,
        account_id -> Text,
        record -> Text,
        error -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ledger_accounts (id) {
        id -> Text,
        tenant_id -> Nullable<Text>,
        owner_kind -> Text,
        owner_id -> Text,
        purpose -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ledger_transactions (id) {
        id -> Text,
        tenant_id -> Nullable<Text>,
        idempotency_key -> Text,
        kind -> Text,
        reference -> Nullable<Text>,
        memo -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Text,
        transaction_id -> Text,
        account_id -> Text,
        amount_nano -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ledger_balances (account_id) {
        account_id -> Text,
        balance_nano -> BigInt,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::joinable!(ledger_entries -> ledger_transactions (transaction_id));
diesel::joinable!(ledger_entries -> ledger_accounts (account_id));
diesel::joinable!(ledger_balances -> ledger_accounts (account_id));
diesel::allow_tables_to_appear_in_same_query!(
    ledger_accounts,
    ledger_transactions,
    ledger_entries,
    ledger_balances
);

diesel::table! {
    payment_providers (tenant_id, provider) {
        tenant_id -> Text,
        provider -> Text,
        secret_key_sealed -> Text,
        secret_key_hint -> Text,
        webhook_secrets_sealed -> Text,
        webhook_secret_count -> Integer,
        currency -> Text,
        nano_per_unit -> BigInt,
        min_topup_nano -> BigInt,
        max_topup_nano -> BigInt,
        dispute_policy -> Text,
        meter_event_name -> Nullable<Text>,
        server_url -> Nullable<Text>,
        store_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        api_key_id -> Nullable<Text>,
        api_kind -> Nullable<Text>,
        rate_source -> Nullable<Text>,
    }
}

diesel::table! {
    payment_notifications (id) {
        id -> Text,
        provider -> Text,
        event_id -> Text,
        tenant_id -> Text,
        event_type -> Text,
        payload -> Text,
        payload_sha256 -> Text,
        received_at -> Timestamp,
        processed_at -> Nullable<Timestamp>,
        outcome -> Nullable<Text>,
    }
}

diesel::table! {
    payments (id) {
        id -> Text,
        tenant_id -> Text,
        account_id -> Text,
        provider -> Text,
        kind -> Text,
        reference -> Nullable<Text>,
        session_id -> Nullable<Text>,
        state -> Text,
        currency -> Text,
        requested_minor -> BigInt,
        paid_minor -> BigInt,
        refunded_minor -> BigInt,
        credited_nano -> BigInt,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    payment_movements (id) {
        id -> Text,
        payment_id -> Text,
        kind -> Text,
        transaction_id -> Text,
        provider_ref -> Text,
        amount_minor -> BigInt,
        amount_nano -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    payment_customers (account_id, provider) {
        account_id -> Text,
        provider -> Text,
        tenant_id -> Text,
        customer_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    auto_topups (account_id) {
        account_id -> Text,
        tenant_id -> Text,
        enabled -> Bool,
        threshold_nano -> BigInt,
        amount_nano -> BigInt,
        failures -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    tenant_webhooks (tenant_id) {
        tenant_id -> Text,
        url -> Text,
        secret_sealed -> Text,
        secret_hint -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    tenant_notifications (id) {
        id -> Text,
        tenant_id -> Text,
        event_type -> Text,
        payload -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        done -> Bool,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    balance_alerts (account_id) {
        account_id -> Text,
        tenant_id -> Text,
        threshold_nano -> BigInt,
        below -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    meter_pushes (usage_id) {
        usage_id -> Text,
        tenant_id -> Text,
        account_id -> Text,
        value_nano -> BigInt,
        pushed_at -> Timestamp,
    }
}

diesel::table! {
    meter_cursors (tenant_id) {
        tenant_id -> Text,
        scanned_before -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(usage_records, meter_pushes, accounts);

diesel::table! {
    tao_addresses (account_id) {
        account_id -> Text,
        tenant_id -> Text,
        address -> Text,
        public_key -> Text,
        derivation_path -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    tao_cursors (genesis_hash) {
        genesis_hash -> Text,
        block_number -> BigInt,
        block_hash -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    tao_balances (genesis_hash, address) {
        genesis_hash -> Text,
        address -> Text,
        free_rao -> BigInt,
        block_number -> BigInt,
    }
}

diesel::table! {
    tao_deposits (id) {
        id -> Text,
        genesis_hash -> Text,
        block_number -> BigInt,
        block_hash -> Text,
        address -> Text,
        tenant_id -> Text,
        account_id -> Text,
        amount_rao -> BigInt,
        rate -> BigInt,
        rate_source -> Text,
        credited_nano -> BigInt,
        status -> Text,
        created_at -> Timestamp,
    }
}
