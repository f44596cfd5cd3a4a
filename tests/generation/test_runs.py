"""The request steps on their own, with a fake provider: retryable vs permanent errors."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from generation import limits
from generation.models import ImageSlot, JobStatus, ProviderRequest, SlotStatus
from generation.providers.base import Provider, ProviderError, ProviderResult, ResultStatus
from generation.services import runs
from generation.services.jobs import job_create
from tests.factories import offline_model


class Failing(Provider):
    name = "offline"

    def __init__(self, error: ProviderError) -> None:
        self.error = error
        self.calls = 0

    def submit(self, request):
        self.calls += 1
        raise self.error


@pytest.fixture
def job(alice):
    with mock.patch("generation.enqueue.send"):
        job = job_create(user=alice, model=offline_model(), prompt="x", images=2)
    cache.delete_many(["cooldown:offline"] + [f"limit:offline:{n}" for n in range(16)])
    return job


def first_request(job) -> ProviderRequest:
    (request_id,) = runs.job_dispatch(job.pk)
    return ProviderRequest.objects.get(pk=request_id)


def submit_with(provider, request) -> runs.Next:
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        return runs.request_submit(request.pk)


def test_a_retryable_error_is_retried_with_backoff_honouring_retry_after(job, settings):
    request = first_request(job)
    step = submit_with(Failing(ProviderError("Too Many Requests", retry_after=7, status_code=429)), request)

    assert step.action == "submit"
    assert 7 <= step.countdown <= settings.PIPELINE_MAX_COUNTDOWN
    request.refresh_from_db()
    assert request.status == "pending" and request.attempts == 1
    assert set(ImageSlot.objects.filter(job=job).values_list("status", flat=True)) == {SlotStatus.RUNNING}


def test_a_429_pauses_the_provider_for_every_worker(job):
    request = first_request(job)
    submit_with(Failing(ProviderError("Too Many Requests", retry_after=5, status_code=429)), request)
    step = runs.request_submit(request.pk)  # the real engine, but the provider is cooling down
    assert step.action == "submit" and step.countdown >= 4


def test_a_permanent_error_fails_the_slots_at_once_without_retry(job):
    request = first_request(job)
    provider = Failing(ProviderError("The prompt was blocked by the safety filter.", permanent=True))
    step = submit_with(provider, request)

    assert step == runs.DONE and provider.calls == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert [e["error"] for e in job.errors] == ["The prompt was blocked by the safety filter."] * 2
    # A retry would be refused the same way: the card offers none.
    assert set(ImageSlot.objects.filter(job=job).values_list("failed_permanently", flat=True)) == {True}


def test_a_transient_failure_can_be_retried(job, settings):
    settings.PIPELINE_MAX_ATTEMPTS = 1
    submit_with(Failing(ProviderError("503 Service Unavailable", status_code=503)), first_request(job))
    assert set(ImageSlot.objects.filter(job=job).values_list("failed_permanently", flat=True)) == {False}


def test_retryable_errors_give_up_after_the_attempt_limit(job, settings):
    settings.PIPELINE_MAX_ATTEMPTS = 2
    request = first_request(job)
    provider = Failing(ProviderError("503 Service Unavailable"))
    assert submit_with(provider, request).action == "submit"
    assert submit_with(provider, request) == runs.DONE

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.errors[0]["error"] == "The provider kept failing: 503 Service Unavailable"


def test_the_backoff_never_exceeds_the_cap_below_the_visibility_timeout(settings):
    assert settings.PIPELINE_MAX_COUNTDOWN < settings.CELERY_VISIBILITY_TIMEOUT
    assert runs.backoff_seconds(30, retry_after=10_000) == settings.PIPELINE_MAX_COUNTDOWN


def test_a_provider_returning_fewer_images_fails_the_missing_slots(job):
    request = first_request(job)
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    result = ProviderResult(status=ResultStatus.SUCCEEDED, images=[GeneratedImage(data=png_bytes())])
    ProviderRequest.objects.filter(pk=request.pk).update(status="submitted")
    runs.request_apply_result(request, result)

    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL
    assert job.errors == [{"index": 1, "error": "The provider returned 1 of 2 images.", "details": ""}]


def test_a_queue_submit_that_may_have_been_received_is_not_repeated(job):
    request = first_request(job)
    provider = Failing(ProviderError("Replicate timed out (ReadTimeout).", may_have_been_received=True))
    provider.asynchronous = True
    step = submit_with(provider, request)

    assert step == runs.DONE and provider.calls == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "not repeated, to avoid paying twice" in job.errors[0]["error"]


def test_a_request_finished_within_the_submit_keeps_the_providers_id(job):
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    class Quick(Provider):
        name = "offline"

        def __init__(self) -> None:
            pass

        def submit(self, request):
            images = [GeneratedImage(data=png_bytes()) for _ in request.batch_indexes]
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, external_id="pred-123")

    request = first_request(job)
    assert submit_with(Quick(), request) == runs.DONE
    request.refresh_from_db()
    assert request.external_id == "pred-123" and request.status == "succeeded"


class Lost(Provider):
    """A provider whose submit answer was lost: it only counts what the pipeline asks of it."""

    name = "offline"

    def __init__(self, *, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self.submits = 0
        self.recovers = 0

    def submit(self, request):
        self.submits += 1
        raise AssertionError("a lost submit must not be sent again blindly")

    def recover(self, request):
        self.recovers += 1
        return None


def lost_submit(job) -> ProviderRequest:
    request = first_request(job)
    ProviderRequest.objects.filter(pk=request.pk).update(status="submitted", external_id="")
    return request


# The two images of the answer are stored by threads, which only see committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_lost_submit_is_found_again_when_the_adapter_can(job, django_capture_on_commit_callbacks):
    request = lost_submit(job)
    # The offline engine keeps no state: it finds the request by our own id and renders it.
    with django_capture_on_commit_callbacks(execute=True):
        assert runs.request_recover(request.pk) == runs.DONE
    request.refresh_from_db()
    assert request.external_id == str(request.pk) and request.status == "succeeded"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.succeeded_count == 2


def test_a_lost_queue_submit_that_cannot_be_found_fails_at_once_and_is_not_resent(job):
    request = lost_submit(job)
    provider = Lost(asynchronous=True)
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        assert runs.request_recover(request.pk) == runs.DONE
    assert (provider.recovers, provider.submits) == (1, 0)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.errors[0]["error"] == runs.LOST_SUBMIT_ERROR
    assert job.owner.credit_account.balance == 100  # refunded: nothing was made


def test_a_lost_synchronous_submit_is_simply_sent_again(job):
    request = lost_submit(job)
    with mock.patch("generation.services.runs.get_provider", return_value=Lost(asynchronous=False)):
        step = runs.request_recover(request.pk)
    assert step.action == "submit"
    request.refresh_from_db()
    assert request.status == "pending" and request.due_at is not None


class Throttled(Provider):
    name = "offline"
    asynchronous = True

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, request, external_id, handles):
        self.polls += 1
        raise ProviderError("Too Many Requests", retry_after=120, status_code=429)


def test_a_polls_retry_after_is_kept_in_full_and_pauses_the_provider(job, settings):
    request = first_request(job)
    ProviderRequest.objects.filter(pk=request.pk).update(status="submitted", external_id="ext-1")
    provider = Throttled()
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        step = runs.request_poll(request.pk)
        assert step.action == "poll" and step.countdown <= settings.PIPELINE_MAX_COUNTDOWN
        request.refresh_from_db()
        assert 115 <= (request.due_at - timezone.now()).total_seconds() <= 121  # not cut to 30 s
        assert limits.cooldown_remaining("offline") > 100

        # The capped countdown fires early: the step sees it is not yet due and waits again.
        again = runs.request_poll(request.pk)
        assert again.action == "poll" and provider.polls == 1
        # A webhook saying the request ended looks at once all the same.
        runs.request_poll(request.pk, now_anyway=True)
        assert provider.polls == 2


def test_the_providers_id_is_saved_even_when_releasing_the_lease_fails(job, settings):
    settings.OFFLINE_LATENCY_SECONDS = 5  # the engine answers PENDING with an id to poll
    request = first_request(job)
    with mock.patch("generation.limits.cache.delete", side_effect=ConnectionError("redis went away")):
        step = runs.request_submit(request.pk)
    assert step.action == "poll"
    request.refresh_from_db()
    assert request.external_id == str(request.pk) and request.status == "submitted"


def test_the_id_write_goes_through_a_dropped_database_connection():
    answers = iter([OperationalError("server closed the connection"), InterfaceError("connection already closed"), 1])

    def write() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with mock.patch("generation.services.runs.connection.close") as reconnect:
        assert runs._write_through_reconnects(write) == 1
    assert reconnect.call_count == 2


def test_a_lost_queue_submit_sent_with_a_webhook_waits_for_it_then_fails(job, settings):
    request = lost_submit(job)
    provider = Lost(asynchronous=True)
    hook = mock.patch("generation.services.runs.webhook_url_for", return_value="https://studio.example/hook")
    with hook, mock.patch("generation.services.runs.get_provider", return_value=provider):
        ProviderRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now())
        assert runs.request_recover(request.pk) == runs.DONE
        request.refresh_from_db()
        assert request.status == "submitted"  # its webhook may still bring it (webhook_receive adopts it)

        too_late = timezone.now() - timedelta(seconds=settings.LOST_SUBMIT_WEBHOOK_WAIT_SECONDS + 1)
        ProviderRequest.objects.filter(pk=request.pk).update(sent_at=too_late)
        runs.request_recover(request.pk)
    assert provider.submits == 0
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.errors[0]["error"] == runs.LOST_SUBMIT_ERROR


class Queued(Provider):
    """A queue API that gives no poll estimate of its own, unless told to send a Retry-After."""

    name = "offline"
    asynchronous = True

    def __init__(self, poll_after: float | None = None) -> None:
        self.poll_after = poll_after

    def poll(self, request, external_id, handles):
        return ProviderResult(status=ResultStatus.PENDING, poll_after=self.poll_after)


def submitted_seconds_ago(request, seconds: float) -> None:
    sent = timezone.now() - timedelta(seconds=seconds)
    ProviderRequest.objects.filter(pk=request.pk).update(status="submitted", external_id="ext-1", sent_at=sent)


def test_a_pending_poll_is_next_due_just_before_the_models_learnt_finish(job):
    from generation import poll_schedule

    request = first_request(job)
    cache.delete(poll_schedule._key(request.model_id))
    for _ in range(3):
        poll_schedule.record_duration(request.model_id, 2.4)
    submitted_seconds_ago(request, 0.5)
    with mock.patch("generation.services.runs.get_provider", return_value=Queued()):
        step = runs.request_poll(request.pk)
    cache.delete(poll_schedule._key(request.model_id))

    # Not the provider's fixed 1 s tick: 2.4 s expected, minus the lead, minus the 0.5 s run so far.
    assert step.action == "poll"
    # (less the time this test took since it dated the submit, on a loaded machine)
    assert 1.5 <= step.countdown <= 2.4 - poll_schedule.LEAD_SECONDS - 0.5 + 0.01


def test_a_poll_expecting_the_finish_any_moment_looks_again_within_its_task(job):
    from generation import poll_schedule
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    class DoneOnThirdLook(Queued):
        looks = 0

        def poll(self, request, external_id, handles):
            self.looks += 1
            if self.looks < 3:
                return super().poll(request, external_id, handles)
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=[GeneratedImage(data=png_bytes())] * 2)

    request = first_request(job)
    cache.delete(poll_schedule._key(request.model_id))
    poll_schedule.record_duration(request.model_id, 1.0)
    submitted_seconds_ago(request, 1.0)  # due now: each next look is ~50 ms away
    provider = DoneOnThirdLook()
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        step = runs.request_poll(request.pk)
    cache.delete(poll_schedule._key(request.model_id))

    # No poll task per look: one task looked three times and stored the images.
    assert step == runs.DONE and provider.looks == 3
    request.refresh_from_db()
    assert request.status == "succeeded" and request.polls == 3


def test_a_provider_that_pushes_its_status_is_waited_on_then_looked_at_at_once(job):
    from generation import poll_schedule
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    class EndsWhileWaitedOn(Queued):
        looks, ended, waits = 0, False, []

        def wait_for_end(self, handles, *, timeout):
            self.waits.append(timeout)
            self.ended = True
            return True

        def poll(self, request, external_id, handles):
            self.looks += 1
            if not self.ended:
                return super().poll(request, external_id, handles)
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=[GeneratedImage(data=png_bytes())] * 2)

    request = first_request(job)
    cache.delete(poll_schedule._key(request.model_id))
    poll_schedule.record_duration(request.model_id, 1.0)
    submitted_seconds_ago(request, 1.0)
    provider = EndsWhileWaitedOn()
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        step = runs.request_poll(request.pk)
    cache.delete(poll_schedule._key(request.model_id))

    # One wait, for no longer than the task may look, and the look right after it found the end.
    assert step == runs.DONE and provider.looks == 2
    assert len(provider.waits) == 1 and 0 < provider.waits[0] <= runs.INLINE_POLL_SECONDS
    request.refresh_from_db()
    assert request.status == "succeeded"


def test_a_poll_far_from_the_learnt_finish_is_left_to_its_own_task(job):
    from generation import poll_schedule

    request = first_request(job)
    cache.delete(poll_schedule._key(request.model_id))
    poll_schedule.record_duration(request.model_id, 5.0)
    submitted_seconds_ago(request, 0.2)
    provider = mock.Mock(wraps=Queued(), asynchronous=True)
    with mock.patch("generation.services.runs.get_provider", return_value=provider):
        step = runs.request_poll(request.pk)
    cache.delete(poll_schedule._key(request.model_id))
    assert step.action == "poll" and step.countdown > 4 and provider.poll.call_count == 1


def test_a_pending_polls_retry_after_wins_over_the_schedule(job):
    request = first_request(job)
    submitted_seconds_ago(request, 0.5)
    with mock.patch("generation.services.runs.get_provider", return_value=Queued(poll_after=7.0)):
        step = runs.request_poll(request.pk)
    assert step.action == "poll" and step.countdown == pytest.approx(7.0)


def test_a_finished_request_teaches_the_schedule_its_duration(job):
    from generation import poll_schedule
    from generation.providers.base import GeneratedImage
    from tests.factories import png_bytes

    class Done(Queued):
        def poll(self, request, external_id, handles):
            images = [GeneratedImage(data=png_bytes()) for _ in range(2)]
            return ProviderResult(status=ResultStatus.SUCCEEDED, images=images)

    request = first_request(job)
    cache.delete(poll_schedule._key(request.model_id))
    submitted_seconds_ago(request, 1.7)
    with mock.patch("generation.services.runs.get_provider", return_value=Done()):
        runs.request_poll(request.pk)
    assert poll_schedule.expected_seconds(request.model_id) == pytest.approx(1.7, abs=0.2)
    cache.delete(poll_schedule._key(request.model_id))


def submit_while_the_slot_is_held(request, call_seconds: float | None) -> runs.Next:
    """Submit `request` while another call holds the provider's one slot; its calls are timed at
    `call_seconds` (None: not timed yet)."""
    from generation import poll_schedule

    key = poll_schedule._key(request.model_id, poll_schedule.CALL)
    cache.delete(key)
    if call_seconds is not None:
        poll_schedule.record_duration(request.model_id, call_seconds, poll_schedule.CALL)
    try:
        with limits.provider_slot("offline", holder="someone-else") as held:
            assert held
            return runs.request_submit(request.pk)
    finally:
        cache.delete(key)


def test_a_submit_refused_a_slot_waits_until_one_is_expected_to_free(job, settings):
    """A synchronous provider's calls hold the slot for seconds: the waiter does not spin."""
    settings.PROVIDER_CONCURRENCY = {**settings.PROVIDER_CONCURRENCY, "offline": 1}
    step = submit_while_the_slot_is_held(first_request(job), 3.0)

    assert step.action == "submit"
    assert 3.0 - 0.2 <= step.countdown <= 3.0 + runs.SLOT_MARGIN_SECONDS + 0.05


def test_a_synchronous_providers_waiter_backs_its_hand_over_up_a_whole_call_later(job, settings):
    """Its slot comes by hand-over when the held call ends; its own step is the backstop and must
    not race the hand-over (and be refused) at the expected release."""
    settings.PROVIDER_CONCURRENCY = {**settings.PROVIDER_CONCURRENCY, "offline": 1}
    blocking = mock.Mock(asynchronous=False)
    with mock.patch("generation.services.runs.get_provider", return_value=blocking):
        blocking.is_configured.return_value = True
        step = submit_while_the_slot_is_held(first_request(job), 3.0)

    assert step.action == "submit"
    assert 6.0 - 0.2 <= step.countdown <= 6.0 + runs.SLOT_MARGIN_SECONDS + 0.05


def test_a_submit_refused_a_slot_of_an_untimed_provider_tries_again_soon(job, settings):
    settings.PROVIDER_CONCURRENCY = {**settings.PROVIDER_CONCURRENCY, "offline": 1}
    step = submit_while_the_slot_is_held(first_request(job), None)
    assert step.action == "submit" and runs.LIMIT_WAIT_SECONDS <= step.countdown <= 2 * runs.LIMIT_WAIT_SECONDS


def test_refused_submits_queue_behind_the_older_requests_still_to_be_sent(job, settings):
    settings.PROVIDER_CONCURRENCY = {**settings.PROVIDER_CONCURRENCY, "offline": 1}
    request = first_request(job)
    older = timezone.now() - timedelta(seconds=5)
    for _ in range(2):  # two requests queued before ours, not sent yet
        earlier = ProviderRequest.objects.create(job=job, model=request.model, provider="offline", due_at=older)
        ProviderRequest.objects.filter(pk=earlier.pk).update(created_at=older)
    step = submit_while_the_slot_is_held(request, 3.0)

    # The held call ends in ~3 s and serves the first of the older two; each next call takes 3 s more.
    assert 9.0 - 0.2 <= step.countdown <= 9.0 + runs.SLOT_MARGIN_SECONDS + 0.05


def test_a_synchronous_call_hands_its_slot_to_the_oldest_waiter_when_it_ends(
    job, enqueued, django_capture_on_commit_callbacks
):
    class Blocking(Provider):
        name = "offline"  # synchronous: the call holds its slot until the answer

        def __init__(self) -> None:
            pass

        def submit(self, request):
            return ProviderResult(status=ResultStatus.FAILED, error="refused", permanent=True)

    request = first_request(job)
    later = timezone.now() + timedelta(seconds=8)
    waiters = []
    for age in (3, 2):  # parked for a slot, the older first
        waiter = ProviderRequest.objects.create(job=job, model=request.model, provider="offline", due_at=later)
        ProviderRequest.objects.filter(pk=waiter.pk).update(created_at=timezone.now() - timedelta(seconds=age))
        waiters.append(waiter)
    backing_off = ProviderRequest.objects.create(
        job=job, model=request.model, provider="offline", due_at=later, error="HTTP 503"
    )
    ProviderRequest.objects.filter(pk=backing_off.pk).update(created_at=timezone.now() - timedelta(seconds=9))

    with django_capture_on_commit_callbacks(execute=True):
        submit_with(Blocking(), request)

    sent = [c.args for c in enqueued.call_args_list if c.args[0] == "generation.tasks.request_submit_task"]
    assert sent == [("generation.tasks.request_submit_task", str(waiters[0].pk))]
    waiters[0].refresh_from_db()
    assert waiters[0].due_at <= timezone.now()
    # Its lease went with it: no newcomer can take the slot before the waiter's step comes.
    assert limits._handed_to("offline", str(waiters[0].pk)) is not None
    limits.give_back("offline", str(waiters[0].pk))
