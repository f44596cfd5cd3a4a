"""Business logic of the pipeline; views and Celery tasks only parse input and call these."""
