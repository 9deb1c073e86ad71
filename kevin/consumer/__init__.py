"""kevin.consumer: follow Kevin's match feed into your own PostgreSQL, exactly once.

    pool = await Consumer.create_pool("postgresql://me@db/mine")
    consumer = Consumer(url="http://kevin:8080", api_key=KEY, pool=pool,
                        strategy="contiguous", callback=on_update)
    await consumer.run()

See kevin.consumer.consumer for the guarantees and the strategies.
"""

from kevin.consumer.consumer import (
    STRATEGIES,
    Callback,
    Consumer,
    ConsumerError,
    OverdueCallback,
    OverdueEvent,
    ProposalCallback,
    ProposalEvent,
    Strategy,
    Update,
)

__all__ = ["STRATEGIES", "Callback", "Consumer", "ConsumerError", "OverdueCallback",
           "OverdueEvent", "ProposalCallback", "ProposalEvent", "Strategy", "Update"]
