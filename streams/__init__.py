"""The streams worker: `webhooks.raw` to invitations, and the delay topic's scheduler.

Faust hosts the process (streams/app.py): the worker's lifecycle (start, signals, clean stop),
its service tree and logging. The processing is not a Faust agent: two aiokafka transactional
consume-transform-produce loops (streams/txloop.py), the raw loop (streams/raw_loop.py, with
the pure transform in streams/transform.py) and the scheduler (streams/scheduler.py). Each
commits a batch's outputs together with its input offsets in one Kafka transaction; Faust's
own `processing_guarantee="exactly_once"`, measured with the same SIGKILL scenario
(bench/faust_eos.py), left about 1,000 duplicates in 5,000 records.
"""
