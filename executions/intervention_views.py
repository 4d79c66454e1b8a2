"""The dialog that answers a step waiting for intervention (a failure strategy's
``manual_intervention``, SPEC §9), opened from the execution page's banner: Retry, Ignore, Mark
as success, Mark as failure or Abort, with an optional comment.

GET shows the dialog for ``?step=STAGE.STEP&action=ANSWER`` (with htmx in the page's
``<dialog>``, otherwise as a page of its own); POST answers through
``services.answer_intervention``, the one home of the rule (Execute on the pipeline, which
answers there are, whether the step still waits, the first of two answers wins). A refusal
shows the dialog again with the message and its status: 403 without Execute (404 for who may
not see the execution, from ``load_execution``), 400 for a tampered answer or step, 404 for a
step that does not exist, 409 when the step waits no more, saying what it is now.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from executions import presenters
from executions.forms import InterventionForm
from executions.loaders import load_execution
from executions.models import StepRun
from executions.services import answer_intervention, check_answer, intervention_step
from pipelines import permissions
from stageline.errors import Conflict, Invalid, Refusal
from stageline.htmx import done, render_dialog


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_intervention(request: HttpRequest, pk: int) -> HttpResponse:
    """Answer the intervention ``step`` waits for with ``action`` and an optional comment."""
    execution = load_execution(request.user, pk)
    user = request.user
    posted = request.method == "POST"
    data = request.POST if posted else request.GET
    form = InterventionForm(data if posted else None, initial={"step": data.get("step", "")})
    key, action = data.get("step", ""), data.get("action", "")
    step: StepRun | None = None
    now: list[StepRun] = []  # a 409: the steps as they are now
    error: Refusal | None = None
    try:
        permissions.check(user, "execute", execution)
        if posted:
            if not form.is_valid():
                raise Invalid(" ".join(str(e) for errors in form.errors.values() for e in errors))
            answered = answer_intervention(
                execution=execution,
                step=form.cleaned_data["step"],
                user=user,
                action=action,
                comment=form.cleaned_data["comment"],
            )
            messages.success(
                request,
                f"{presenters.ANSWER_LABELS[action]}: step '{answered.stage_run.name} › "
                f"{answered.name}' of #{execution.sequence} ({presenters.ANSWER_EFFECTS[action]}).",
            )
            return done(request, reverse("execution", args=[execution.pk]))
        if not key:
            raise Invalid("Say which step to answer (STAGE.STEP).")
        check_answer(action)
        step = intervention_step(execution, key)
    except Conflict as exc:
        error = exc
        now = list(exc.extra.get("steps") or [])  # type: ignore[call-overload]
    except Refusal as exc:
        error = exc
        if isinstance(exc, Invalid) and key and step is None:
            step = _still_waiting(execution, key)  # a bad comment: the form is shown again
    known = presenters.interventions(execution, user) if step is not None or now else []
    context = {
        "execution": execution,
        "form": form,
        "step": step,
        "intervention": next((i for i in known if i.step == step), None) if step else None,
        "action": action if action in presenters.ANSWER_LABELS else "",
        "label": presenters.ANSWER_LABELS.get(action, ""),
        "effect": presenters.ANSWER_EFFECTS.get(action, ""),
        "now": now,
        # What became of the steps that wait no more (answered by whom, timed out).
        "ended": [i for i in known if i.step in now and i.state != presenters.WAITING],
        "error": error.message if error else "",
    }
    return render_dialog(
        request, "executions/intervention.html", context, status=error.status if error else 200
    )


def _still_waiting(execution, key: str) -> StepRun | None:
    try:
        return intervention_step(execution, key)
    except Refusal:
        return None
