"""Credits: one per job, charged with the job in one transaction, refunded at most once."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from generation import events
from generation.models import CreditAccount, CreditLedger, GenerationJob, LedgerKind


class OutOfCredits(Exception):
    pass


def credit_account(user) -> CreditAccount:
    """The user's account, opened with the starting grant on first use."""
    account = CreditAccount.objects.filter(user=user).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            account = CreditAccount.objects.create(user=user, balance=settings.STARTING_CREDITS)
            CreditLedger.objects.create(
                account=account, kind=LedgerKind.GRANT, amount=settings.STARTING_CREDITS, note="starting credits"
            )
    except IntegrityError:  # opened by a concurrent request
        account = CreditAccount.objects.get(user=user)
    return account


def credits_charge(*, account: CreditAccount, job: GenerationJob) -> None:
    """Take one credit for `job`. Call inside the transaction that creates the job.

    The conditional UPDATE never lets the balance go below zero, whatever runs concurrently;
    the ledger's unique (job, kind) makes a second charge of one job impossible.
    """
    debited = CreditAccount.objects.filter(pk=account.pk, balance__gte=1).update(balance=F("balance") - 1)
    if not debited:
        raise OutOfCredits("You are out of credits: each generation takes one credit.")
    CreditLedger.objects.create(account=account, job=job, kind=LedgerKind.CHARGE, amount=-1)
    # Reported by jobs.job_create once this transaction commits (generation.events).


def credits_refund(*, job: GenerationJob, note: str) -> bool:
    """Give back a job's credit once; later calls do nothing. Returns whether it refunded."""
    charge = CreditLedger.objects.filter(job=job, kind=LedgerKind.CHARGE).select_related("account").first()
    if charge is None:
        return False
    try:
        with transaction.atomic():
            CreditLedger.objects.create(account=charge.account, job=job, kind=LedgerKind.REFUND, amount=1, note=note)
            CreditAccount.objects.filter(pk=charge.account_id).update(balance=F("balance") + 1)
    except IntegrityError:
        return False
    events.credits("refunded", 1, job_id=job.pk)
    return True
