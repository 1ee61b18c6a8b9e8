"""Running RevPulse on one machine: the embedded broker, local worker processes and the demo."""
