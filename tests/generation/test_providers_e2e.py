"""Jobs run end to end through the REAL provider adapters against the loopback provider simulator.

A dedicated Celery worker process (its own queue, its own cache key prefix) is pointed at the
simulator through the adapters' settings (FAL_QUEUE_URL, REPLICATE_API_URL, GEMINI_API_URL, keys,
TRUSTED_FETCH_HOSTS); this process gets the same settings with override_settings. Jobs are made with
job_create on the seeded models, so everything between the button and the stored asset is real:
dispatch, limits, the adapters' HTTP, retries, downloads, image processing, storage.

Webhook tests start a second worker whose PUBLIC_BASE_URL is pytest-django's live server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager, suppress

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import override_settings
from PIL import Image

from generation.models import CreditLedger, GenerationJob, ImageSlot, JobMode, JobStatus, ProviderRequest, SlotStatus
from generation.services.control import job_cancel
from generation.services.credits import credit_account
from generation.services.jobs import job_create
from generation.services.webhooks import WEBHOOK_POLL_SECONDS
from models_registry.models import ApiModel, FallbackChain, FallbackEntry
from models_registry.seed import fallback_chain_keys
from studio.celery import app as celery_app
from studio.models import WorkspaceAsset
from tests.factories import png_bytes, wait_for_job
from tests.worker import ARTIFACTS, start_worker, stop_worker

pytestmark = [pytest.mark.worker]

FAL_MODEL = "fal-ai/flux-2/flash"
REPLICATE_MODEL = "stability-ai/sdxl"
GEMINI_MODEL = "gemini-2.5-flash-image"
RUN = uuid.uuid4().hex[:8]
# Distinctive keys: the leak test greps for them (and for PLANTED alone) in logs and stored errors.
PLANTED = "planted-SECRET"
KEYS = {
    "fal": f"fal-{PLANTED}-{RUN}",
    "replicate": f"r8_{PLANTED}-{RUN}",
    "gemini": f"AIza-{PLANTED}-{RUN}",
}
# Small so retries and backoff stay fast; MAX_ATTEMPTS explicit because tests count calls.
GEMINI_CONCURRENCY = 2
MAX_ATTEMPTS = 4
READ_TIMEOUT = 2.0
WORKER_SETTINGS = {
    "PIPELINE_RETRY_BASE_SECONDS": "0.2",
    "PIPELINE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "PROVIDER_READ_TIMEOUT": str(READ_TIMEOUT),
    "PROVIDER_CONNECT_TIMEOUT": "2",
    "GEMINI_CONCURRENCY": str(GEMINI_CONCURRENCY),
    "FAL_CONCURRENCY": "8",
    "REPLICATE_CONCURRENCY": "6",
    "FAL_RATE_PER_SECOND": "100",
    "REPLICATE_RATE_PER_SECOND": "100",
    "GEMINI_RATE_PER_SECOND": "100",
}


# --- workers ------------------------------------------------------------------------------------

# The dedicated workers now running (each test leaves them idle, see quiesce).
WORKERS: list = []


@contextmanager
def dedicated_worker(simulator, *, name: str, env: dict[str, str]):
    """A worker alone on a queue of its own, with this process sending its tasks there.

    The session's shared worker (tests/conftest.py) may be running on the run's default queue
    with no simulator settings: it must never see these jobs.
    """
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-{name}-{uuid.uuid4().hex[:6]}"
    prefix = f"e2e-{name}-{uuid.uuid4().hex[:8]}"
    overrides = override_settings(CELERY_TASK_DEFAULT_QUEUE=queue, **simulator.settings_overrides())
    previous_queue = celery_app.conf.task_default_queue
    overrides.enable()
    celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
    worker = None
    try:
        worker = start_worker(
            concurrency=8,
            name=name,
            extra_env={
                **simulator.worker_env(),
                **WORKER_SETTINGS,
                "CELERY_DEFAULT_QUEUE": queue,
                "CACHE_KEY_PREFIX": prefix,
                **env,
            },
        )
        worker.queue, worker.cache_prefix, worker.log_path = queue, prefix, ARTIFACTS / f"celery-{name}.log"
        worker.hostname = f"{name}-{os.getpid()}@{socket.gethostname()}"  # as start_worker names it
        WORKERS.append(worker)
        yield worker
    finally:
        if worker is not None:
            WORKERS.remove(worker)
            stop_worker(worker)
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = previous_queue
        overrides.disable()
        _purge(queue)
        _clear_cache_prefix(prefix)


def quiesce(worker, timeout: float = 5.0) -> None:
    """Wait until the worker runs nothing, and revoke its scheduled leftovers (polls of finished or
    canceled requests, webhook safety-net polls). A worker query that runs while the test database
    is flushed (TRUNCATE) can deadlock the flush, so each test leaves the worker idle."""
    control = celery_app.control
    inspect = control.inspect(destination=[worker.hostname], timeout=1.0)
    deadline = time.monotonic() + timeout
    idle_checks, revoked = 0, set()
    while time.monotonic() < deadline:
        scheduled = (inspect.scheduled() or {}).get(worker.hostname) or []
        # Revoked ETA tasks stay listed until their time comes; then they are dropped unrun.
        leftovers = [entry["request"]["id"] for entry in scheduled if entry["request"]["id"] not in revoked]
        if leftovers:
            control.revoke(leftovers, destination=[worker.hostname])
            revoked.update(leftovers)
        busy = (inspect.active() or {}).get(worker.hostname) or []
        busy += (inspect.reserved() or {}).get(worker.hostname) or []
        idle_checks = 0 if busy or leftovers else idle_checks + 1
        if idle_checks >= 2:  # twice in a row: nothing was on its way either
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {worker.hostname} still busy after {timeout}s: {busy}")


def _purge(queue: str) -> None:
    """Drop what a stopped worker left on its one-off queue (canceled jobs' scheduled polls)."""
    with suppress(Exception), celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


def _clear_cache_prefix(prefix: str) -> None:
    """Forget a worker's limiter leases, cool-downs and health marks (its own key prefix)."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def sim_keys(simulator_server):
    original = simulator_server.keys
    simulator_server.keys = dict(KEYS)
    simulator_server.reset()
    yield simulator_server
    simulator_server.keys = original
    simulator_server.reset()


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup, django_db_blocker, sim_keys):
    with (
        django_db_blocker.unblock(),
        dedicated_worker(sim_keys, name="providers-e2e", env={"PUBLIC_BASE_URL": ""}) as w,
    ):
        yield w


@pytest.fixture
def sim(simulator, e2e_worker, transactional_db):
    """The simulator, reset, with the module's worker running and the registry seeded."""
    _clear_cache_prefix(e2e_worker.cache_prefix)
    call_command("seed_models", verbosity=0)
    # No fallback unless a test builds its chain: a retried-out failure must stay a failure here.
    FallbackChain.objects.all().delete()
    yield simulator
    for worker in WORKERS:
        quiesce(worker)
    _clear_cache_prefix(e2e_worker.cache_prefix)


# --- helpers ------------------------------------------------------------------------------------


def model(key: str) -> ApiModel:
    return ApiModel.objects.get(key=key)


def run(user, key: str, images: int, tag: str, **kwargs) -> GenerationJob:
    """Create a job whose prompt carries `tag`, so the simulator's calls for it can be told apart."""
    return job_create(user=user, model=model(key), prompt=f"portrait of a knight {tag}", images=images, **kwargs)


def tag() -> str:
    return f"tag-{uuid.uuid4().hex[:10]}"


def assets_of(job: GenerationJob) -> list[WorkspaceAsset]:
    return list(WorkspaceAsset.objects.filter(job=job).order_by("batch_index"))


def pixels(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.convert("RGB").tobytes()


def stored_pngs(job: GenerationJob) -> list[bytes]:
    out = []
    for asset in assets_of(job):
        with default_storage.open(asset.file.name) as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.size == (asset.width, asset.height)
        assert default_storage.exists(asset.thumbnail.name)
        out.append(data)
    return out


def assert_succeeded_with(job: GenerationJob, count: int) -> list[bytes]:
    assert job.status == JobStatus.SUCCEEDED, job.errors
    assert (job.succeeded_count, job.failed_count, job.errors) == (count, 0, [])
    assert [a.batch_index for a in assets_of(job)] == list(range(count))
    data = stored_pngs(job)
    assert len({pixels(d) for d in data}) == count  # different pictures, not one copied
    return data


def failed_calls(calls) -> list:
    return [c for c in calls if c.status and c.status >= 400]


def errors_text(job: GenerationJob) -> str:
    job.refresh_from_db()
    return " ".join(e["error"] for e in job.errors)


def make_chain(task: str, keys: list[str]) -> None:
    chain = FallbackChain.objects.create(task=task)
    for position, key in enumerate(keys):
        FallbackEntry.objects.create(chain=chain, model=model(key), position=position)


# --- x4 on every provider -----------------------------------------------------------------------


def test_fal_x4_is_one_native_request_through_the_queue_api(sim, alice):
    sim.latency = 0.2
    label = tag()
    job = wait_for_job(run(alice, FAL_MODEL, 4, label))

    data = assert_succeeded_with(job, 4)
    (submit,) = sim.calls_for("fal", "submit", contains=label)
    assert submit.path == f"/fal/{FAL_MODEL}" and submit.method == "POST"
    assert submit.headers["authorization"] == f"Key {KEYS['fal']}"
    assert submit.json["num_images"] == 4 and label in submit.json["prompt"]
    request = ProviderRequest.objects.get(job=job)
    assert request.slot_indexes == [0, 1, 2, 3]
    # Status and result went to the URLs fal handed out, which drop the model's sub-path.
    base = f"/fal/fal-ai/flux-2/requests/{request.external_id}"
    statuses = sim.calls_for("fal", "status")
    assert statuses and {c.path for c in statuses} == {f"{base}/status"}
    assert all(c.query.get("logs") in (["false"], ["0"], ["true"], ["1"]) for c in statuses)
    assert [c.path for c in sim.calls_for("fal", "result")] == [base]
    # The four images are the provider's four, in batch order; downloads carry no API key.
    served = sim.output_images(request.external_id)
    assert [pixels(d) for d in data] == [pixels(d) for d in served]
    downloads = sim.calls_for("files")
    assert len(downloads) == 4 and all("authorization" not in c.headers for c in downloads)
    assert job.provider == "fal" and not job.fallback_attempted


def test_replicate_x4_is_one_sdxl_prediction_with_num_outputs_4(sim, alice):
    sim.latency = 0.2
    label = tag()
    job = wait_for_job(run(alice, REPLICATE_MODEL, 4, label))

    data = assert_succeeded_with(job, 4)
    (create,) = sim.calls_for("replicate", "create", contains=label)
    assert create.path == "/replicate/v1/predictions"
    assert create.headers["authorization"] == f"Bearer {KEYS['replicate']}"
    assert create.headers["prefer"].startswith("wait")
    assert create.json["version"] == model(REPLICATE_MODEL).capabilities["version"]
    assert create.json["input"]["num_outputs"] == 4
    # Prefer: wait covered the whole run: no polling was needed.
    assert sim.calls_for("replicate", "get") == []
    prediction = create.response_json
    assert create.status == 201 and prediction["status"] == "succeeded"
    assert [pixels(d) for d in data] == [pixels(d) for d in sim.output_images(prediction["id"])]


def test_replicate_polls_the_get_url_and_takes_a_single_string_output(sim, alice):
    sim.configure(latency=0.3, replicate_prefer_wait=False, replicate_output_string=True)
    job = wait_for_job(run(alice, REPLICATE_MODEL, 1, tag()))

    assert_succeeded_with(job, 1)
    request = ProviderRequest.objects.get(job=job)
    gets = sim.calls_for("replicate", "get")
    assert gets and {c.path for c in gets} == {f"/replicate/v1/predictions/{request.external_id}"}
    assert len(sim.calls_for("replicate", "create")) == 1


def test_fewer_images_than_asked_keeps_those_that_came_and_fails_the_rest(sim, alice):
    sim.configure(latency=0.1, num_images=3)
    job = wait_for_job(run(alice, FAL_MODEL, 4, tag()))

    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded_count, job.failed_count) == (3, 1)
    assert [e["index"] for e in job.errors] == [3] and "returned 3 of 4 images" in job.errors[0]["error"]
    assert [a.batch_index for a in assets_of(job)] == [0, 1, 2]


def test_gemini_x4_is_a_fan_out_of_four_generate_content_calls(sim, alice):
    sim.latency = 0.2
    label = tag()
    job = wait_for_job(run(alice, GEMINI_MODEL, 4, label))

    assert_succeeded_with(job, 4)
    calls = sim.calls_for("gemini", "generate", contains=label)
    assert len(calls) == 4
    for call in calls:
        assert call.path == f"/gemini/v1beta/models/{GEMINI_MODEL}:generateContent"
        assert call.headers["x-goog-api-key"] == KEYS["gemini"]
        assert "key" not in call.query  # the key travels in a header, never in the URL
        assert "candidateCount" not in call.json.get("generationConfig", {})
        assert "IMAGE" in call.json["generationConfig"]["responseModalities"]
    assert ProviderRequest.objects.filter(job=job).count() == 4
    assert sim.max_concurrency("gemini") <= GEMINI_CONCURRENCY


# --- image to image: references reach each provider in its own field -----------------------------


def reference(owner, color) -> WorkspaceAsset:
    asset = WorkspaceAsset(owner=owner, source="upload", width=64, height=80, content_type="image/png")
    asset.file.save("ref.png", ContentFile(png_bytes(color=color)), save=False)
    asset.save()
    return asset


def read(asset: WorkspaceAsset) -> bytes:
    with asset.file.open("rb") as fh:
        return fh.read()


def data_uri_bytes(uri: str) -> bytes:
    header, _, encoded = uri.partition(",")
    assert header == "data:image/png;base64"
    return base64.b64decode(encoded)


@pytest.mark.parametrize("key", ["fal-ai/flux-2/flash/edit", REPLICATE_MODEL, GEMINI_MODEL])
def test_image_to_image_sends_the_references_in_the_models_own_field(sim, alice, key):
    sim.latency = 0.1
    first, second = reference(alice, (10, 200, 30)), reference(alice, (30, 10, 200))
    many = model(key).supports("i2i_multi") and key != GEMINI_MODEL
    refs = [first, second, first] if many else [first]
    label = tag()
    job = wait_for_job(run(alice, key, 2, label, mode=JobMode.I2I_MODIFY, references=[r.pk for r in refs]))

    assert_succeeded_with(job, 2)
    first_bytes = read(first)
    provider = model(key).provider
    calls = sim.calls_for(provider, {"fal": "submit", "replicate": "create", "gemini": "generate"}[provider])
    assert calls and all(label in c.text for c in calls)
    if provider == "fal":
        (submit,) = calls
        # Local storage has no URL to give: data URIs, each stored file once, in order.
        sent = [data_uri_bytes(uri) for uri in submit.json["image_urls"]]
        assert sent == [first_bytes, read(second)]
        assert submit.path == f"/fal/{key}"
    elif provider == "replicate":
        (create,) = calls
        assert data_uri_bytes(create.json["input"]["image"]) == first_bytes
        assert create.json["input"]["prompt_strength"] == job.params["denoise"]
    else:
        assert len(calls) == 2  # one image per call
        for call in calls:
            parts = call.json["contents"][0]["parts"]
            inline = [p.get("inline_data") or p.get("inlineData") for p in parts if "text" not in p]
            assert len(inline) == 1 and base64.b64decode(inline[0]["data"]) == first_bytes


# --- rate limits, server errors, malformed answers, timeouts -----------------------------------


@pytest.mark.parametrize(("delay_in", "storm_size"), [("retry-info", 4), ("retry-after-header", 2)])
def test_a_429_storm_is_waited_out_without_exceeding_the_concurrency_limit(sim, alice, delay_in, storm_size):
    sim.configure(latency=0.3, concurrency_cap=GEMINI_CONCURRENCY)
    header = delay_in == "retry-after-header"
    storm = sim.rate_limit_next(storm_size, retry_after=1, provider="gemini", header=header)
    label = tag()
    job = wait_for_job(run(alice, GEMINI_MODEL, 4, label))

    assert_succeeded_with(job, 4)
    assert storm.hits == storm_size
    calls = sim.calls_for("gemini", "generate", contains=label)
    assert sim.max_concurrency("gemini") <= GEMINI_CONCURRENCY
    # No call was refused for going over the cap: every 429 was the storm's.
    assert [c for c in calls if c.status == 429 and not c.fault] == []
    assert len([c for c in calls if c.status == 200]) == 4
    # The delay comes as RetryInfo ("1s", Gemini's way) or as Retry-After: 1, and the worker pauses
    # every call to Gemini for it: after a 429 only calls already on their way (within a moment)
    # may start before the second is over.
    for limited in (c for c in calls if c.status == 429):
        gaps = [round(c.started - limited.finished, 3) for c in calls if c.started > limited.finished]
        assert all(gap < 0.25 or gap >= 0.9 for gap in gaps), gaps


@pytest.mark.parametrize("provider", ["gemini", "fal"])
def test_server_errors_are_retried_until_the_provider_answers(sim, alice, provider):
    sim.latency = 0.1
    op = {"gemini": "generate", "fal": "submit"}[provider]
    errors = sim.fail_next(2, 503, provider=provider, op=op)
    key = {"gemini": GEMINI_MODEL, "fal": FAL_MODEL}[provider]
    job = wait_for_job(run(alice, key, 1, tag()))

    assert_succeeded_with(job, 1)
    assert errors.hits == 2
    calls = sim.calls_for(provider, op)
    assert [c.status for c in calls] == [503, 503, 200]
    assert ProviderRequest.objects.get(job=job).attempts == 3


PERMANENT = {
    "fal-422-on-submit": (FAL_MODEL, "submit", "prompt: The prompt was flagged"),
    "fal-model-failed": (FAL_MODEL, "submit", "prompt: The prompt was flagged"),
    "replicate-failed": (REPLICATE_MODEL, "create", "NSFW content detected"),
    "gemini-blocked": (GEMINI_MODEL, "generate", "blocked by Google's safety filters (PROHIBITED_CONTENT)"),
    "gemini-text-only": (GEMINI_MODEL, "generate", "answered without an image"),
}


@pytest.mark.parametrize("case", list(PERMANENT))
def test_a_permanent_refusal_fails_at_once_without_retry_or_fallback(sim, alice, case):
    key, op, message = PERMANENT[case]
    provider = model(key).provider
    sim.latency = 0.1
    if case == "fal-422-on-submit":
        detail = [{"loc": ["body", "prompt"], "msg": "The prompt was flagged", "type": "content_policy_violation"}]
        sim.fail_next(1, 422, provider="fal", op="submit", body={"detail": detail})
    elif case in {"fal-model-failed", "replicate-failed"}:
        sim.fail_jobs = 1
    elif case == "gemini-blocked":
        sim.gemini_mode = "blocked"
    else:
        sim.gemini_mode = "text"
    # A chain to fall back to exists: refusals of the prompt must not use it.
    make_chain("t2i", [key, "fal-ai/flux-2" if provider != "fal" else GEMINI_MODEL])
    balance = credit_account(alice).balance
    job = wait_for_job(run(alice, key, 1, tag()))

    assert job.status == JobStatus.FAILED
    assert message in errors_text(job)
    assert len(sim.calls_for(provider, op)) == 1
    assert {c.provider for c in sim.calls if c.provider in ("fal", "replicate", "gemini")} == {provider}
    assert not job.fallback_attempted
    assert ProviderRequest.objects.get(job=job).attempts == 1
    assert credit_account(alice).balance == balance  # every image failed: the credit came back


def test_a_malformed_gemini_answer_is_retried(sim, alice):
    sim.malformed_next(1, provider="gemini")
    job = wait_for_job(run(alice, GEMINI_MODEL, 1, tag()))

    assert_succeeded_with(job, 1)
    assert [c.fault for c in sim.calls_for("gemini")] == ["malformed", ""]


def test_a_malformed_fal_status_answer_is_polled_again(sim, alice):
    sim.latency = 0.1
    sim.malformed_next(1, provider="fal", op="status")
    job = wait_for_job(run(alice, FAL_MODEL, 2, tag()))

    assert_succeeded_with(job, 2)
    assert len(sim.calls_for("fal", "submit")) == 1
    assert [c.fault for c in sim.calls_for("fal", "status")][0] == "malformed"


@pytest.mark.parametrize(
    ("provider", "fault"),
    [("fal", "malformed"), ("fal", "drop"), ("replicate", "malformed"), ("replicate", "drop")],
)
def test_a_lost_answer_to_a_queue_submit_fails_cleanly_without_paying_twice(sim, alice, provider, fault):
    op = {"fal": "submit", "replicate": "create"}[provider]
    getattr(sim, f"{fault}_next")(1, provider=provider, op=op)
    key = {"fal": FAL_MODEL, "replicate": REPLICATE_MODEL}[provider]
    job = wait_for_job(run(alice, key, 2, tag()))

    assert job.status == JobStatus.FAILED
    assert "not repeated" in errors_text(job)
    assert len(sim.calls_for(provider, op)) == 1  # never a second (billed) create
    assert set(ImageSlot.objects.filter(job=job).values_list("status", flat=True)) == {SlotStatus.FAILED}


def test_a_gemini_call_that_times_out_is_retried(sim, alice):
    sim.timeout_next(1, seconds=READ_TIMEOUT + 1.5, provider="gemini")
    job = wait_for_job(run(alice, GEMINI_MODEL, 1, tag()))

    assert_succeeded_with(job, 1)
    first, second = sim.calls_for("gemini")
    assert first.fault == "timeout" and second.status == 200
    # The worker gave up on the first after its read timeout, not after the simulator answered.
    assert second.started - first.started < READ_TIMEOUT + 1.4


# --- provider calls stay with their provider; fal and Gemini fidelity -----------------------------


@contextmanager
def canary_listener():
    """A loopback port that records whether anything connected to it (a host that must never be called)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.05)
        connected: list = []

        def reached() -> bool:
            with suppress(TimeoutError):
                connection, _ = listener.accept()
                connected.append(connection.recv(65536))
                connection.close()
            return bool(connected)

        yield listener.getsockname()[1], reached, connected


def test_a_fal_status_url_on_another_host_is_never_called(sim, alice):
    with canary_listener() as (port, reached, received):
        sim.configure(latency=0.1, fal_urls_base=f"http://127.0.0.1:{port}/fal")
        make_chain("t2i", [FAL_MODEL, GEMINI_MODEL])
        label = tag()
        job = wait_for_job(run(alice, FAL_MODEL, 1, label))

        assert job.status == JobStatus.FAILED
        assert "a URL on another host; it was not followed" in errors_text(job)
        assert not reached(), f"the worker connected to the foreign host and sent: {received}"
    assert len(sim.calls_for("fal", "submit", contains=label)) == 1
    assert sim.calls_for("fal", "status") == []
    # Not an outage: nothing else is paid for the same images.
    assert sim.calls_for("gemini") == [] and not job.fallback_attempted


@pytest.mark.parametrize("status", [422, 500])
def test_a_failed_fal_job_is_judged_by_the_status_its_result_replays(sim, alice, status):
    sim.configure(latency=0.1, fail_jobs=1, fal_job_error_status=status)
    make_chain("t2i", [FAL_MODEL, GEMINI_MODEL])
    label = tag()
    job = wait_for_job(run(alice, FAL_MODEL, 1, label))

    (result,) = sim.calls_for("fal", "result")
    assert result.status == status  # the result was fetched and read
    if status == 422:
        # The input was refused: permanent, with fal's own words, and no other billed provider.
        assert job.status == JobStatus.FAILED
        assert "prompt: The prompt was flagged by the content checker." in errors_text(job)
        assert sim.calls_for("gemini") == [] and not job.fallback_attempted
    else:
        # A runner failure (unbilled): the images move on to the next model of the chain.
        assert_succeeded_with(job, 1)
        assert job.fallback_attempted and job.provider == "gemini"
        assert len(sim.calls_for("gemini", "generate", contains=label)) == 1


def test_an_unknown_fal_status_fails_the_job_at_once(sim, alice):
    sim.configure(latency=5, fal_status_override="SOMETHING_NEW")
    started = time.monotonic()
    job = wait_for_job(run(alice, FAL_MODEL, 1, tag()))

    assert job.status == JobStatus.FAILED
    assert "unknown request status (SOMETHING_NEW)" in errors_text(job)
    assert time.monotonic() - started < 10  # not polled until the job deadline
    assert len(sim.calls_for("fal", "status")) == 1
    assert len(sim.calls_for("fal", "cancel")) == 1  # nobody will collect it: fal is told to stop


@pytest.mark.parametrize("broken", [1, 5])
def test_a_garbled_gemini_image_is_asked_for_again_once_at_most(sim, alice, broken):
    sim.configure(gemini_broken_next=broken, gemini_broken_kind="not-an-image")
    label = tag()
    job = wait_for_job(run(alice, GEMINI_MODEL, 1, label))

    calls = sim.calls_for("gemini", "generate", contains=label)
    assert len(calls) == 2  # each answer is billed: one resubmit, never more
    assert all(c.json["generationConfig"]["responseModalities"] == ["IMAGE"] for c in calls)
    if broken == 1:
        assert_succeeded_with(job, 1)
    else:
        assert job.status == JobStatus.FAILED
        assert "not a PNG, JPEG or WebP image. It was not asked for again" in errors_text(job)


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_of_a_running_fal_job_puts_the_cancel_url(sim, alice):
    sim.latency = 30
    job = run(alice, FAL_MODEL, 2, tag())
    request = sim.wait_until(lambda: ProviderRequest.objects.filter(job=job).exclude(external_id="").first())
    submit_answer = request.handles

    assert job_cancel(job=job) is True
    (cancel,) = sim.wait_until(lambda: sim.calls_for("fal", "cancel"))
    assert cancel.method == "PUT" and cancel.body == b""
    assert f"{sim.base_url}{cancel.path}" == submit_answer["cancel_url"]
    assert cancel.path == f"/fal/fal-ai/flux-2/requests/{request.external_id}/cancel"
    assert cancel.headers["authorization"] == f"Key {KEYS['fal']}"
    assert cancel.status == 202 and sim.job(request.external_id).canceled
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED and assets_of(job) == []
    assert CreditLedger.objects.filter(job=job, kind="refund").count() == 1  # nothing arrived: refunded


def test_cancel_of_a_running_replicate_prediction_posts_its_cancel_url(sim, alice):
    sim.configure(latency=30, replicate_prefer_wait=False)
    job = run(alice, REPLICATE_MODEL, 2, tag())
    request = sim.wait_until(lambda: ProviderRequest.objects.filter(job=job).exclude(external_id="").first())

    assert job_cancel(job=job) is True
    (cancel,) = sim.wait_until(lambda: sim.calls_for("replicate", "cancel"))
    assert cancel.method == "POST"
    assert f"{sim.base_url}{cancel.path}" == request.handles["cancel"]
    assert cancel.headers["authorization"] == f"Bearer {KEYS['replicate']}"
    assert cancel.status == 200 and cancel.response_json["status"] == "canceled"
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED


# --- fallback -----------------------------------------------------------------------------------


def test_a_fal_outage_falls_back_to_the_next_model_of_the_seeded_chain(sim, alice):
    keys = fallback_chain_keys("t2i")
    assert keys[:2] == [FAL_MODEL, REPLICATE_MODEL]
    make_chain("t2i", keys)
    outage = sim.outage("fal")
    sim.latency = 0.1
    label = tag()
    job = wait_for_job(run(alice, FAL_MODEL, 2, label))

    assert_succeeded_with(job, 2)
    assert job.fallback_attempted and job.provider == "replicate"
    # fal was tried (with retries) until the pipeline gave up on it, then SDXL made both images.
    assert len(sim.calls_for("fal", "submit", contains=label)) == MAX_ATTEMPTS == outage.hits
    (create,) = sim.calls_for("replicate", "create", contains=label)
    assert create.json["input"]["num_outputs"] == 2
    assert {a.metadata.get("model") for a in assets_of(job)} == {REPLICATE_MODEL}

    # fal is now known to be down: the next job goes straight to the chain's next model.
    second = tag()
    job = wait_for_job(run(alice, FAL_MODEL, 1, second))
    assert_succeeded_with(job, 1)
    assert job.provider == "replicate" and job.fallback_attempted
    assert sim.calls_for("fal", contains=second) == []

    # A Gemini outage: the chain wraps around past Gemini, skips fal (still marked down) and
    # lands on SDXL.
    sim.clear_faults()
    sim.outage("gemini")
    third = tag()
    job = wait_for_job(run(alice, GEMINI_MODEL, 2, third))
    assert_succeeded_with(job, 2)
    assert job.provider == "replicate" and job.fallback_attempted
    # Both requests of the fan-out moved; once one had spent its attempts and marked Gemini down,
    # the other could move without spending all of its own.
    assert MAX_ATTEMPTS < len(sim.calls_for("gemini", contains=third)) <= 2 * MAX_ATTEMPTS
    assert len(sim.calls_for("replicate", "create", contains=third)) == 2
    assert sim.calls_for("fal", contains=third) == []


def test_a_replicate_outage_retries_the_create_then_falls_back(sim, alice):
    # A 5xx is an answer that the create failed, so it is retried (no prediction can be billed
    # twice) and, once retries run out, the job moves on along the chain.
    keys = fallback_chain_keys("t2i")
    make_chain("t2i", keys)
    outage = sim.outage("replicate")
    sim.latency = 0.1
    label = tag()
    job = wait_for_job(run(alice, REPLICATE_MODEL, 1, label))

    assert_succeeded_with(job, 1)
    assert job.fallback_attempted and job.provider != "replicate"
    assert len(sim.calls_for("replicate", "create", contains=label)) == MAX_ATTEMPTS == outage.hits


# --- keys never leak ----------------------------------------------------------------------------


def test_planted_keys_appear_in_no_log_and_no_stored_error(sim, alice, e2e_worker):
    """Careless providers quote the key they were given; the studio must still never repeat it."""
    # fal and Replicate refuse the key (401, quoting it); Gemini takes it but fails with 500s quoting it.
    sim.configure(echo_credentials=True, accepted_keys={"fal": "other", "replicate": "other", "gemini": KEYS["gemini"]})
    quoting = {"error": {"code": 500, "message": f"backend rejected {KEYS['gemini']}", "status": "INTERNAL"}}
    sim.fail_next(MAX_ATTEMPTS, 500, provider="gemini", body=quoting)
    jobs = [run(alice, key, 1, tag()) for key in (FAL_MODEL, REPLICATE_MODEL, GEMINI_MODEL)]
    jobs = [wait_for_job(job) for job in jobs]

    assert [job.status for job in jobs] == [JobStatus.FAILED] * 3
    # The keys were in play: the simulator received them, and quoted them back.
    for provider in ("fal", "replicate", "gemini"):
        calls = sim.calls_for(provider)
        assert any(KEYS[provider] in json.dumps(c.headers) for c in calls)
    assert not any(secret.encode() in c.body for c in sim.calls for secret in KEYS.values())  # headers only
    time.sleep(0.3)  # let the worker's last log lines reach the file

    stored = json.dumps(
        [
            [job.errors for job in jobs],
            list(ImageSlot.objects.filter(job__in=jobs).values_list("error", "details")),
            list(ProviderRequest.objects.filter(job__in=jobs).values_list("error", flat=True)),
        ]
    )
    log = e2e_worker.log_path.read_text(errors="replace")
    assert "answered HTTP 401" in stored and "answered HTTP 401" in log  # the right things were read
    assert "[redacted]" in stored
    for secret in [*KEYS.values(), PLANTED]:
        assert secret not in stored
        assert secret not in log


# --- webhooks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook_worker(django_db_setup, django_db_blocker, sim_keys, live_server, e2e_worker):
    previous = celery_app.conf.task_default_queue
    with (
        django_db_blocker.unblock(),
        dedicated_worker(sim_keys, name="providers-webhooks", env={"PUBLIC_BASE_URL": live_server.url}) as worker,
    ):
        # The module worker's queue comes back between webhook tests (see webhook_sim).
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = previous
        yield worker


@pytest.fixture
def webhook_sim(sim, webhook_worker, live_server):
    """This process (and the live server in it) sends tasks to the webhook worker for the test."""
    previous = celery_app.conf.task_default_queue
    celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = webhook_worker.queue
    # The live server is this process: it verifies fal deliveries against the simulator's JWKS.
    cache.delete_many(["fal-webhook-jwks", "fal-webhook-jwks:refreshed"])
    _clear_cache_prefix(webhook_worker.cache_prefix)
    try:
        yield sim
    finally:
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = previous


def webhook_job(sim, alice, provider: str) -> tuple[GenerationJob, str]:
    label = tag()
    if provider == "replicate":
        sim.replicate_prefer_wait = False  # answer "starting" at once, so the webhook matters
    job = run(alice, {"fal": FAL_MODEL, "replicate": REPLICATE_MODEL}[provider], 2, label)
    return job, label


def webhook_target(sim, provider: str, label: str) -> str:
    (submit,) = sim.calls_for(provider, {"fal": "submit", "replicate": "create"}[provider], contains=label)
    if provider == "fal":
        return submit.query["fal_webhook"][0]
    assert submit.json["webhook_events_filter"] == ["completed"]
    return submit.json["webhook"]


@pytest.mark.parametrize("provider", ["fal", "replicate"])
def test_a_signed_webhook_finishes_the_job_without_waiting_for_a_poll(webhook_sim, alice, live_server, provider):
    sim = webhook_sim
    sim.latency = 0.5
    job, label = webhook_job(sim, alice, provider)
    job = wait_for_job(job, timeout=8)

    assert_succeeded_with(job, 2)
    request = ProviderRequest.objects.get(job=job)
    assert webhook_target(sim, provider, label) == f"{live_server.url}/webhooks/{provider}/{request.pk}"
    (delivery,) = sim.deliveries_for(provider)
    assert delivery.status == 200 and not delivery.forged
    # The safety-net poll waits WEBHOOK_POLL_SECONDS: the one status look came from the delivery.
    assert WEBHOOK_POLL_SECONDS >= 5
    look = {"fal": "status", "replicate": "get"}[provider]
    looks = sim.calls_for(provider, look)
    assert len(looks) == 1 and looks[0].started > delivery.at
    # Providers retry deliveries: a replay changes nothing and costs no second look.
    again = sim.redeliver(delivery)
    assert again.status == 200
    time.sleep(0.3)
    assert len(sim.calls_for(provider, look)) == 1
    assert WorkspaceAsset.objects.filter(job=job).count() == 2


@pytest.mark.parametrize(
    ("provider", "how"), [("fal", "forged"), ("replicate", "forged"), ("fal", "stale"), ("replicate", "stale")]
)
def test_a_forged_or_stale_webhook_changes_nothing(webhook_sim, alice, provider, how):
    sim = webhook_sim
    sim.latency = 0.3
    if how == "forged":
        sim.forge_webhook_signatures = True
    else:
        sim.webhook_timestamp_skew = -(settings.WEBHOOK_TOLERANCE_SECONDS + 60)
    job, _label = webhook_job(sim, alice, provider)
    (delivery,) = sim.wait_until(lambda: sim.deliveries_for(provider), timeout=8)

    assert delivery.status in (400, 401, 403)
    time.sleep(0.5)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and assets_of(job) == []
    assert sim.calls_for(provider, {"fal": "status", "replicate": "get"}[provider]) == []
    assert job_cancel(job=job) is True
