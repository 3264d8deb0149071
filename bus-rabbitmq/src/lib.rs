//! RabbitMQ transport for bus-core (work in progress).
