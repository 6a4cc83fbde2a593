"""The Faust worker: a thin layer that feeds Kafka records to the pure core."""
