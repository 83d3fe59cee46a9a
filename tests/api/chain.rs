//! The metagraph read from a subtensor node (JSON-RPC `state_call` of
//! `NeuronInfoRuntimeApi_get_neurons_lite`, SCALE-decoded), against a fake node that serves
//! bytes encoded from the documented types; failures keep the last good metagraph.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use taogate::worker::chain::encode;
use taogate::worker::config::MinerPoolConfig;
use taogate::worker::hotkey::Hotkey;
use taogate::worker::metagraph::Neuron;
use taogate::worker::transports::miners::{MinerPool, Scheme};

/// What the fake node answers `state_call` with: SCALE bytes, or a JSON-RPC error.
type Answer = Arc<Mutex<Option<Vec<u8>>>>;

/// A minimal HTTP JSON-RPC node; records the params of every `state_call`.
fn fake_node(answer: Answer, seen: Arc<Mutex<Vec<Value>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let req: Value = serde_json::from_slice(&body).unwrap_or_default();
            let reply = match req["method"].as_str() {
                Some("state_call") => {
                    seen.lock().unwrap().push(req["params"].clone());
                    match answer.lock().unwrap().as_ref() {
                        Some(bytes) => json!({"jsonrpc": "2.0", "id": 1, "result": format!("0x{}", hex::encode(bytes))}),
                        None => json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "node unavailable"}}),
                    }
                }
                Some("chain_getHeader") => json!({"jsonrpc": "2.0", "id": 1, "result": {"number": "0x4d2"}}),
                _ => json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "method not found"}}),
            }
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

fn neuron(uid: u16, port: u16) -> Neuron {
    Neuron {
        uid,
        hotkey: Hotkey::generate().ss58,
        ip: "127.0.0.1".into(),
        port,
        incentive: 0.25,
        validator_permit: false,
    }
}

fn uids(pool: &MinerPool) -> Vec<u16> {
    pool.neurons().iter().map(|n| n.uid).collect()
}

#[test]
fn metagraph_from_a_subtensor_node_keeps_the_last_good_copy() {
    let first = vec![neuron(1, 9001), neuron(2, 9002)];
    let answer: Answer = Arc::new(Mutex::new(Some(encode::neurons_lite(&first))));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = fake_node(answer.clone(), seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = MinerPoolConfig {
        terms: Default::default(),
        name: "chain".into(),
        metagraph_file: dir.path().join("metagraph.json").display().to_string(),
        subtensor_url: Some(url),
        netuid: 5,
        race: 2,
        top_k: 16,
        strategy: Default::default(),
    };
    let hotkey = Arc::new(Hotkey::generate());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = MinerPool::new(
            &cfg,
            Scheme::Epistula,
            hotkey.clone(),
            taogate::outbound::ThreadClients::new(reqwest::Client::builder).unwrap(),
            Default::default(),
        )
        .unwrap();
        assert!(pool.neurons().is_empty(), "nothing before the first read");
        pool.refresh().await;
        assert_eq!(uids(&pool), vec![1, 2]);
        assert_eq!(pool.neurons()[0].hotkey, first[0].hotkey);
        assert_eq!(
            seen.lock().unwrap()[0],
            json!(["NeuronInfoRuntimeApi_get_neurons_lite", "0x0500"]),
            "netuid 5, u16 LE"
        );
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg.metagraph_file).unwrap()).unwrap();
        assert_eq!(saved["block"], 1234);

        // The node fails: the last good metagraph stays in use.
        *answer.lock().unwrap() = None;
        pool.refresh().await;
        assert_eq!(uids(&pool), vec![1, 2]);
        // Garbage bytes are a failure too.
        *answer.lock().unwrap() = Some(vec![0x08, 0x01]);
        pool.refresh().await;
        assert_eq!(uids(&pool), vec![1, 2]);

        // New data replaces it.
        *answer.lock().unwrap() = Some(encode::neurons_lite(&[neuron(7, 9007)]));
        pool.refresh().await;
        assert_eq!(uids(&pool), vec![7]);

        // A restart while the node is down starts from the persisted copy.
        *answer.lock().unwrap() = None;
        let restarted = MinerPool::new(
            &cfg,
            Scheme::Epistula,
            hotkey,
            taogate::outbound::ThreadClients::new(reqwest::Client::builder).unwrap(),
            Default::default(),
        )
        .unwrap();
        restarted.refresh().await;
        assert_eq!(uids(&restarted), vec![7]);
    });
}
