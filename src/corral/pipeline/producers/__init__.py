"""Producers shipped with corral, one module each, imported only when a pipeline names one:

- ``memory`` (``corral.pipeline.producers.memory``): an in-memory queue, for tests and demos.
- ``redis_streams`` (``corral.pipeline.producers.redis_streams``): a Redis stream read
  through a consumer group (needs ``corral[redis]``).
- ``rabbitmq`` (``corral.pipeline.producers.rabbitmq``): a RabbitMQ queue consumed with
  prefetch, ack / reject with or without requeue (needs ``corral[rabbitmq]``).
- ``nats`` (``corral.pipeline.producers.nats``): a NATS JetStream durable pull consumer
  (needs ``corral[nats]``).
- ``kafka`` (``corral.pipeline.producers.kafka``): Kafka topics read through a consumer
  group, offsets committed up to the lowest unacknowledged one (needs ``corral[kafka]``);
  also ``KafkaWriter``, the feeding end.

And modules that are not producers: ``stopping``, how the broker producers end their own
tasks in bounded time when a client library loses a cancel; ``offsets``, the Kafka
producer's commit rule; ``redis_writer``, the feeding end of a Redis stream.
"""
