"""The broker's layout for Celery on RabbitMQ (ARCHITECTURE.md, "Scaling past one
machine"), built from three settings so every host declares the same queues.

- One topic exchange, ``<prefix>.tasks``; each queue is bound by its own name.
- ``<prefix>.default``: the jobs that are not partitioned (invoices, purges,
  reconcile, delivery of the outbox, the relay).
- ``<prefix>.partition.<i>``: a fixed set of queues for the jobs that walk wallets.
  A run fans out as one task per wallet partition, and partition ``p`` of ``n``
  goes to queue ``p * q // n`` of ``q``: the same leading bits of the wallet id that
  split the wallets into partitions (iaas.spending.batch) choose the queue.
- ``<prefix>.events``: events relayed from the outbox to consumers outside the money
  transaction.
- Every one of those is a quorum queue (replicated, durable) with a delivery limit: a
  message redelivered that many times (a worker died on it each time, or it failed and
  was put back) goes to the dead-letter exchange ``<prefix>.dead`` and its queue
  ``<prefix>.dead_letters``, at least once (RabbitMQ's ``at-least-once`` strategy), from
  which the operator console reads it.

Queue arguments cannot change on a declared queue (RabbitMQ refuses the redeclaration):
a new delivery limit on a running broker is set with a policy, or by a new prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu import Exchange, Queue


@dataclass(frozen=True)
class Topology:
    prefix: str = "iaas"
    partition_queues: int = 8
    delivery_limit: int = 10

    def __post_init__(self) -> None:
        if self.partition_queues < 1 or self.delivery_limit < 1:
            raise ValueError("partition queues and the delivery limit are at least 1")

    @property
    def exchange(self) -> Exchange:
        return Exchange(f"{self.prefix}.tasks", type="topic", durable=True)

    @property
    def dead_letter_exchange(self) -> Exchange:
        return Exchange(f"{self.prefix}.dead", type="fanout", durable=True)

    @property
    def default_queue(self) -> str:
        return f"{self.prefix}.default"

    @property
    def events_queue(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead_letters"

    def partition_queue(self, index: int) -> str:
        return f"{self.prefix}.partition.{index}"

    def queue_for_partition(self, index: int, count: int) -> str:
        """The queue of wallet partition ``index`` of ``count``."""
        if not 0 <= index < count:
            raise ValueError(f"partition {index} of {count} does not exist")
        return self.partition_queue(index * self.partition_queues // count)

    def work_queue_names(self) -> list[str]:
        return [
            self.default_queue,
            self.events_queue,
            *(self.partition_queue(i) for i in range(self.partition_queues)),
        ]

    def _work_queue(self, name: str) -> Queue:
        return Queue(
            name,
            self.exchange,
            routing_key=name,
            durable=True,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead_letter_exchange.name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",  # what at-least-once dead-lettering needs
            },
        )

    def dead_letter_queue_declaration(self) -> Queue:
        return Queue(
            self.dead_letter_queue,
            self.dead_letter_exchange,
            routing_key="#",
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )

    def queues(self) -> list[Queue]:
        """What a worker consumes (and declares): the work queues. The dead-letter queue
        is declared with them but consumed only by the drain (never as tasks)."""
        return [self._work_queue(name) for name in self.work_queue_names()]
