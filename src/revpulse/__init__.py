"""RevPulse: live revenue-operations metrics from CRM, billing, product and marketing events on Kafka."""
