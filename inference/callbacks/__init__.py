"""Completion callbacks (webhooks): a request's final status POSTed to its `callback_url`.

    submission (API or send_task with `callback_url`)
      -> inference:callback:<id>  a ready-made delivery message, kept beside the job record
    final state, whoever writes it (inference/core/result_backend.py)
      -> the same Redis script moves that message onto the `callbacks` queue: no final state
         without its delivery, and none twice
    the callbacks worker (`python -m inference.callbacks`, its own processes: a receiver that
    hangs holds none of the model workers)
      -> delivery.py: the status as GET /v1/inference/<id> shows it, signed (signing.py), to a
         host on CALLBACK_ALLOWED_HOSTS only (targets.py), retried with exponential backoff
"""
