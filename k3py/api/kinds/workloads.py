"""apps/v1 and batch/v1 kinds: upstream defaults and validation for deployments, replica sets,
daemon sets, stateful sets, controller revisions, jobs and cron jobs."""

from __future__ import annotations

import re

from k3py.api import validation as v
from k3py.api.errors import Cause
from k3py.api.kinds.podspec import default_pod_spec, validate_template
from k3py.api.kinds.registry import register
from k3py.api.selectors import SelectorError, label_selector_from_struct

__all__ = ["fmt_selector"]


def fmt_selector(sel: object) -> str:
    """How upstream prints a LabelSelector value in field errors (Go's %#v)."""
    if not isinstance(sel, dict):
        return "v1.LabelSelector(nil)"
    ml = sel.get("matchLabels")
    labels = v.fmt_value(ml) if ml else "map[string]string(nil)"
    exprs = sel.get("matchExpressions") or []
    if exprs:
        parts = []
        for e in exprs:
            vals = e.get("values")
            vs = "[]string{" + ", ".join(f'"{x}"' for x in vals) + "}" if vals else \
                "[]string(nil)"
            parts.append(f'v1.LabelSelectorRequirement{{Key:"{e.get("key", "")}", '
                         f'Operator:"{e.get("operator", "")}", Values:{vs}}}')
        ex = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    else:
        ex = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{ex}}}"


def _raw(field: str, shown: str, detail: str) -> Cause:
    return {"type": "FieldValueInvalid", "field": field,
            "message": f"Invalid value: {shown}: {detail}"}


def _default_template(spec: dict) -> None:
    tmpl = spec.get("template")
    if isinstance(tmpl, dict):
        pspec = tmpl.setdefault("spec", {})
        if isinstance(pspec, dict):
            default_pod_spec(pspec)


def _default_deployment(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(spec)


def _default_replicaset(obj: dict, old: dict | None) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _default_template(obj["spec"])


def _default_daemonset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    us = spec.setdefault("updateStrategy", {})
    us.setdefault("type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        ru = us.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_template(spec)


def _default_statefulset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    us = spec.setdefault("updateStrategy", {})
    us.setdefault("type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        us.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    policy = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    policy.setdefault("whenDeleted", "Retain")
    policy.setdefault("whenScaled", "Retain")
    for pvc in spec.get("volumeClaimTemplates") or []:
        if isinstance(pvc, dict):
            pvc.setdefault("apiVersion", "v1")
            pvc.setdefault("kind", "PersistentVolumeClaim")
            pvc.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            pvc.setdefault("status", {}).setdefault("phase", "Pending")
    _default_template(spec)


def _nonneg(spec: dict, name: str, path: str) -> list[Cause]:
    val = spec.get(name)
    if val is None:
        return []
    if not isinstance(val, int) or isinstance(val, bool) or val < 0:
        return [v.invalid_value(f"{path}.{name}", val, "must be greater than or equal to 0")]
    return []


def _selector_and_template(spec: dict, kind: str, *, require_always: bool = True,
                           non_empty: bool = True) -> list[Cause]:
    """Selector required and non-empty, template labels matched, template valid."""
    causes: list[Cause] = []
    sel = spec.get("selector")
    tmpl = spec.get("template")
    labels = ((tmpl or {}).get("metadata") or {}).get("labels") or {} \
        if isinstance(tmpl, dict) else {}
    matcher = None
    if sel is None:
        causes.append(v.required("spec.selector"))
    elif not isinstance(sel, dict):
        causes.append(v.invalid_value("spec.selector", sel, "must be an object"))
    else:
        try:
            matcher = label_selector_from_struct(sel)
        except SelectorError as e:
            causes.append(_raw("spec.selector", fmt_selector(sel), str(e)))
        if non_empty and not sel.get("matchLabels") and not sel.get("matchExpressions"):
            causes.append(_raw("spec.selector", fmt_selector(sel),
                               f"empty selector is invalid for {kind}"))
            matcher = None
    if not isinstance(tmpl, dict):
        return causes + [v.required("spec.template")]
    if matcher is not None and not matcher.empty and not matcher.matches(labels):
        causes.append(v.invalid_value("spec.template.metadata.labels", labels,
                                      "`selector` does not match template `labels`"))
    causes += validate_template(tmpl, "spec.template")
    rp = (tmpl.get("spec") or {}).get("restartPolicy") if isinstance(tmpl.get("spec"), dict) \
        else None
    if require_always and rp and rp != "Always":
        causes.append(v.not_supported("spec.template.spec.restartPolicy", rp, ["Always"]))
    if require_always and (tmpl.get("spec") or {}).get("activeDeadlineSeconds") is not None:
        causes.append(v.forbidden("spec.template.spec.activeDeadlineSeconds",
                                  f"activeDeadlineSeconds in {kind_title(kind)} is not "
                                  f"Supported"))
    return causes


def kind_title(kind: str) -> str:
    return {"deployment": "ReplicaSet", "daemonset": "DaemonSet",
            "statefulset": "StatefulSet"}.get(kind, kind)


def _immutable_selector(obj: dict, old: dict | None) -> list[Cause]:
    if old is None:
        return []
    new_sel = (obj.get("spec") or {}).get("selector")
    if new_sel != (old.get("spec") or {}).get("selector"):
        return [_raw("spec.selector", fmt_selector(new_sel), "field is immutable")]
    return []


def _spec(obj: dict) -> dict | None:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else None


def _validate_deployment(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes = _nonneg(spec, "replicas", "spec") + _nonneg(spec, "minReadySeconds", "spec")
    causes += _nonneg(spec, "revisionHistoryLimit", "spec")
    causes += _selector_and_template(spec, "deployment")
    strategy = spec.get("strategy") or {}
    st = strategy.get("type")
    if st and st not in ("RollingUpdate", "Recreate"):
        causes.append(v.not_supported("spec.strategy.type", st, ["Recreate", "RollingUpdate"]))
    if st == "Recreate" and strategy.get("rollingUpdate"):
        causes.append(v.forbidden("spec.strategy.rollingUpdate",
                                  "may not be specified when strategy `type` is 'Recreate'"))
    ru = strategy.get("rollingUpdate") or {}
    if st == "RollingUpdate":
        for f in ("maxUnavailable", "maxSurge"):
            causes += _int_or_percent(ru.get(f), f"spec.strategy.rollingUpdate.{f}")
        if _is_zero(ru.get("maxUnavailable")) and _is_zero(ru.get("maxSurge")):
            causes.append(v.invalid_value("spec.strategy.rollingUpdate.maxUnavailable",
                                          ru.get("maxUnavailable"),
                                          "may not be 0 when `maxSurge` is 0"))
    pds = spec.get("progressDeadlineSeconds")
    mrs = spec.get("minReadySeconds") or 0
    if isinstance(pds, int) and pds <= mrs:
        causes.append(v.invalid_value("spec.progressDeadlineSeconds", pds,
                                      "must be greater than minReadySeconds"))
    return causes + _immutable_selector(obj, old)


_PCT = re.compile(r"^[0-9]+%$")


def _int_or_percent(val: object, path: str) -> list[Cause]:
    if val is None:
        return []
    if isinstance(val, int) and not isinstance(val, bool):
        return [] if val >= 0 else [v.invalid_value(path, val,
                                                    "must be greater than or equal to 0")]
    if isinstance(val, str) and _PCT.match(val):
        if int(val[:-1]) > 100:
            return [v.invalid_value(path, val, "must not be greater than 100%")]
        return []
    return [v.invalid_value(path, val, "a valid percent string must be a numeric string "
                                       "followed by an ending '%' (e.g. '1%',  or '93%', regex "
                                       "used for validation is '[0-9]+%')")]


def _is_zero(val: object) -> bool:
    return val == 0 or val == "0%"


def _validate_replicaset(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes = _nonneg(spec, "replicas", "spec") + _nonneg(spec, "minReadySeconds", "spec")
    return causes + _selector_and_template(spec, "deployment") + _immutable_selector(obj, old)


def _validate_daemonset(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes = _nonneg(spec, "minReadySeconds", "spec")
    causes += _selector_and_template(spec, "daemonset")
    st = (spec.get("updateStrategy") or {}).get("type")
    if st and st not in ("OnDelete", "RollingUpdate"):
        causes.append(v.not_supported("spec.updateStrategy.type", st,
                                      ["OnDelete", "RollingUpdate"]))
    return causes + _immutable_selector(obj, old)


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy",
                "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def _with_claim_volumes(spec: dict) -> dict:
    """The spec with its volumeClaimTemplates added to the template's volumes, as each pod
    gets them from the controller: the containers' volumeMounts may name them."""
    tmpl = spec.get("template")
    claims = [(t.get("metadata") or {}).get("name") for t in
              spec.get("volumeClaimTemplates") or [] if isinstance(t, dict)]
    pod_spec = tmpl.get("spec") if isinstance(tmpl, dict) else None
    volumes = (pod_spec or {}).get("volumes") or []
    if not isinstance(pod_spec, dict) or not any(claims) or not isinstance(volumes, list):
        return spec
    have = {vol.get("name") for vol in volumes if isinstance(vol, dict)}
    volumes += [{"name": c, "persistentVolumeClaim": {"claimName": c}}
                for c in claims if isinstance(c, str) and c and c not in have]
    return {**spec, "template": {**tmpl, "spec": {**pod_spec, "volumes": volumes}}}


def _validate_statefulset(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes = _nonneg(spec, "replicas", "spec") + _nonneg(spec, "minReadySeconds", "spec")
    causes += _selector_and_template(_with_claim_volumes(spec), "statefulset")
    pmp = spec.get("podManagementPolicy")
    if pmp and pmp not in ("OrderedReady", "Parallel"):
        causes.append(v.not_supported("spec.podManagementPolicy", pmp,
                                      ["OrderedReady", "Parallel"]))
    st = (spec.get("updateStrategy") or {}).get("type")
    if st and st not in ("OnDelete", "RollingUpdate"):
        causes.append(v.not_supported("spec.updateStrategy.type", st,
                                      ["OnDelete", "RollingUpdate"]))
    if old is not None:
        ns = {k: val for k, val in spec.items() if k not in _STS_MUTABLE}
        os_ = {k: val for k, val in (old.get("spec") or {}).items() if k not in _STS_MUTABLE}
        if ns != os_:
            causes.append(v.forbidden(
                "spec", "updates to statefulset spec for fields other than 'replicas', "
                "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' "
                "and 'minReadySeconds' are forbidden"))
    return causes


def _validate_revision(obj: dict, old: dict | None) -> list[Cause]:
    rev = obj.get("revision")
    if not isinstance(rev, int) or rev < 0:
        return [v.invalid_value("revision", rev, "must be greater than or equal to 0")]
    if old is not None and obj.get("data") != old.get("data"):
        return [v.invalid_value("data", "", "field is immutable")]
    return []


# ------------------------------------------------------------------ batch

def _job_selector(obj: dict) -> None:
    """The strategy's generateSelector (needs metadata.uid, set before defaulting)."""
    md = obj.get("metadata") or {}
    spec = obj["spec"]
    uid, name = md.get("uid"), md.get("name", "")
    if not uid or spec.get("manualSelector"):
        return
    tmpl = spec.setdefault("template", {})
    tmd = tmpl.setdefault("metadata", {})
    labels = tmd.get("labels")
    if not isinstance(labels, dict):
        labels = tmd["labels"] = {}
    for k in ("job-name", "batch.kubernetes.io/job-name"):
        labels.setdefault(k, name)
    for k in ("controller-uid", "batch.kubernetes.io/controller-uid"):
        labels.setdefault(k, uid)
    sel = spec.get("selector")
    if not isinstance(sel, dict):
        sel = spec["selector"] = {}
    ml = sel.get("matchLabels")
    if not isinstance(ml, dict):
        ml = sel["matchLabels"] = {}
    ml.setdefault("batch.kubernetes.io/controller-uid", uid)


def _default_job_spec(spec: dict) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None \
            else 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy",
                    "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        for pc in (rule or {}).get("onPodConditions") or []:
            if isinstance(pc, dict):
                pc.setdefault("status", "True")


def _default_job(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    _default_job_spec(spec)
    if old is None:
        _job_selector(obj)
    _default_template(spec)
    md = obj.setdefault("metadata", {})
    tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if tlabels and not md.get("labels"):
        md["labels"] = dict(tlabels)


def _validate_job_spec(spec: dict, path: str, check_selector: bool = True) -> list[Cause]:
    causes: list[Cause] = []
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
              "ttlSecondsAfterFinished"):
        causes += _nonneg(spec, f, path)
    cm = spec.get("completionMode")
    if cm and cm not in ("NonIndexed", "Indexed"):
        causes.append(v.not_supported(f"{path}.completionMode", cm, ["NonIndexed", "Indexed"]))
    if cm == "Indexed" and spec.get("completions") is None:
        causes.append(v.required(f"{path}.completions",
                                 "when completion mode is Indexed"))
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        return causes + [v.required(f"{path}.template")]
    if check_selector:
        sel = spec.get("selector")
        if sel is None:
            causes.append(v.required(f"{path}.selector"))
        else:
            try:
                m = label_selector_from_struct(sel)
            except SelectorError as e:
                causes.append(_raw(f"{path}.selector", fmt_selector(sel), str(e)))
            else:
                labels = (tmpl.get("metadata") or {}).get("labels") or {}
                if not m.empty and not m.matches(labels):
                    causes.append(v.invalid_value(f"{path}.template.metadata.labels", labels,
                                                  "`selector` does not match template "
                                                  "`labels`"))
    causes += validate_template(tmpl, f"{path}.template")
    rp = (tmpl.get("spec") or {}).get("restartPolicy") if isinstance(tmpl.get("spec"), dict) \
        else None
    if rp not in ("OnFailure", "Never"):
        causes.append(v.not_supported(f"{path}.template.spec.restartPolicy", rp or "",
                                      ["OnFailure", "Never"]))
    return causes


def _validate_job(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes = _validate_job_spec(spec, "spec")
    if old is not None:
        ospec = old.get("spec") or {}
        causes += _immutable_selector(obj, old)
        if spec.get("completions") != ospec.get("completions") and \
                spec.get("completionMode") != "Indexed":
            causes.append(v.invalid_value("spec.completions", spec.get("completions"),
                                          "field is immutable"))
        if spec.get("completionMode") != ospec.get("completionMode"):
            causes.append(v.invalid_value("spec.completionMode", spec.get("completionMode"),
                                          "field is immutable"))
        if (spec.get("template") or {}).get("spec") != (ospec.get("template") or {}).get(
                "spec") and not ospec.get("suspend"):
            causes.append(_raw("spec.template", "core.PodTemplateSpec{...}",
                               "field is immutable"))
    return causes


def _default_cronjob(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    jt = spec.setdefault("jobTemplate", {})
    if isinstance(jt, dict) and isinstance(jt.setdefault("spec", {}), dict):
        _default_template(jt["spec"])


_SCHEDULE_FIELD = re.compile(r"^[\d*/,\-?A-Za-z]+$")
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _validate_cronjob(obj: dict, old: dict | None) -> list[Cause]:
    spec = _spec(obj)
    if spec is None:
        return [v.required("spec")]
    causes: list[Cause] = []
    sched = spec.get("schedule") or ""
    if not sched:
        causes.append(v.required("spec.schedule"))
    else:
        fields = sched.split()
        if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):
            causes.append(v.invalid_value("spec.schedule", sched,
                                          "cannot use TZ or CRON_TZ in schedule, use timeZone "
                                          "field instead"))
        elif not (sched.strip() in _MACROS or sched.startswith("@every ") or
                  (len(fields) == 5 and all(_SCHEDULE_FIELD.match(f) for f in fields))):
            causes.append(v.invalid_value("spec.schedule", sched,
                                          f"expected exactly 5 fields, found {len(fields)}: "
                                          f"{sched}" if len(fields) != 5 else
                                          "invalid schedule format"))
    cp = spec.get("concurrencyPolicy")
    if cp and cp not in ("Allow", "Forbid", "Replace"):
        causes.append(v.not_supported("spec.concurrencyPolicy", cp,
                                      ["Allow", "Forbid", "Replace"]))
    for f in ("startingDeadlineSeconds", "successfulJobsHistoryLimit",
              "failedJobsHistoryLimit"):
        causes += _nonneg(spec, f, "spec")
    name = (obj.get("metadata") or {}).get("name") or ""
    if len(name) > 52:
        causes.append(v.invalid_value("metadata.name", name,
                                      "must be no more than 52 characters"))
    jt = spec.get("jobTemplate")
    if not isinstance(jt, dict) or not isinstance(jt.get("spec"), dict):
        return causes + [v.required("spec.jobTemplate")]
    return causes + _validate_job_spec(jt["spec"], "spec.jobTemplate.spec",
                                       check_selector=False)


register("apps", "Deployment", default=_default_deployment, validate=_validate_deployment,
         generation=True, status_keeps_metadata=("labels",))
register("apps", "ReplicaSet", default=_default_replicaset, validate=_validate_replicaset,
         generation=True, status_keeps_metadata=("labels",))
register("apps", "DaemonSet", default=_default_daemonset, validate=_validate_daemonset,
         generation=True, status_keeps_metadata=("labels",))
register("apps", "StatefulSet", default=_default_statefulset, validate=_validate_statefulset,
         generation=True, status_keeps_metadata=("labels",))
register("apps", "ControllerRevision", validate=_validate_revision,
         spec_fields=("data", "revision"))
register("batch", "Job", default=_default_job, validate=_validate_job, generation=True)
register("batch", "CronJob", default=_default_cronjob, validate=_validate_cronjob,
         generation=True)
