DROP TABLE auto_topups;
DROP TABLE payment_customers;
DROP TABLE payment_movements;
DROP TABLE payments;
DROP TABLE payment_notifications;
DROP TABLE payment_providers;
