"""The local GPU worker (Procfile `worker-gpu`): one diffusers SDXL pipeline per GPU, fed from the
`gpu` Celery queue, batching the waiting images of several jobs into one pipeline call.

- `params.py` turns a provider request into one pipeline call's settings (no torch);
- `runner.py` owns torch and diffusers: loading the pipeline, one batched call, out-of-memory
  halving. Only the GPU worker imports it;
- `batches.py` is the worker's service: claim the waiting requests that can share a call, run
  them, hand each its own images (generation.services.runs.request_apply_result);
- the adapter the rest of the studio talks to is generation.providers.local_sdxl.
"""
