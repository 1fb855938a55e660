"""The review resources: create-only, answered from the authorizer chain and never stored.

- SelfSubjectAccessReview (`kubectl auth can-i`): may I do this?
- SelfSubjectRulesReview (`kubectl auth can-i --list`): what may I do in this namespace?
- SubjectAccessReview, LocalSubjectAccessReview: may that user do this? (for who may create
  them: admins, system:auth-delegator, nodes)
- SelfSubjectReview (`kubectl auth whoami`): who am I, after impersonation?

Installed by k3py.server.bootstrap into the ApiServer's create_only table."""

from __future__ import annotations

from k3py.api import errors
from k3py.server.apiserver.auth import Attributes, AuthorizerChain, User
from k3py.server.rbac.authorizer import RBACAuthorizer
from k3py.server.rbac.rules import normalized

__all__ = ["Reviews"]

_AUTHZ = "authorization.k8s.io"
_AUTHN = "authentication.k8s.io"
_FULL_RESOURCES = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
_FULL_URLS = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]


def _review(body: object, kind: str, group: str) -> dict:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request is not a JSON object")
    sent = body.get("kind")
    if sent not in (None, kind):
        raise errors.bad_request(f"the kind in the data ({sent}) does not match the expected "
                                 f"kind ({kind})")
    spec = body.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise errors.bad_request("spec must be an object")
    md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    return {"kind": kind, "apiVersion": f"{group}/v1",
            "metadata": {**md, "creationTimestamp": None}, "spec": spec or {}}


def _invalid(kind: str, field: str, message: str) -> errors.StatusError:
    return errors.invalid(_AUTHZ, kind, "", [errors.field_cause(field, message)])


def _str(spec: dict, key: str) -> str:
    value = spec.get(key)
    return value if isinstance(value, str) else ""


def _attributes(kind: str, spec: dict, user: User, namespace: str | None) -> Attributes:
    """Attributes from spec.resourceAttributes or spec.nonResourceAttributes (exactly one)."""
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (res is None) == (non is None) or not isinstance(res or non, dict):
        raise _invalid(kind, "spec.resourceAttributes", "exactly one of "
                       "nonResourceAttributes or resourceAttributes must be specified")
    if non is not None:
        return Attributes(user, _str(non, "verb"), "", "", None, path=_str(non, "path"))
    ns = _str(res, "namespace") or None
    if namespace is not None and ns != namespace:
        raise _invalid(kind, "spec.resourceAttributes.namespace",
                       "must match metadata.namespace")
    return Attributes(user, _str(res, "verb"), _str(res, "group"), _str(res, "resource"), ns,
                      _str(res, "name") or None, _str(res, "subresource"))


def _subject(spec: dict) -> User:
    groups = spec.get("groups") or []
    extra = spec.get("extra") or {}
    if not isinstance(groups, list) or not isinstance(extra, dict):
        raise _invalid("SubjectAccessReview", "spec.groups", "must be a list of strings")
    user = _str(spec, "user")
    if not user and not groups:
        raise _invalid("SubjectAccessReview", "spec.user",
                       'Invalid value: "": at least one of user or group must be specified')
    return User(user, tuple(str(g) for g in groups), _str(spec, "uid"),
                tuple((str(k), tuple(str(x) for x in v or ())) for k, v in extra.items()))


def _user_info(user: User) -> dict:
    info: dict = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra}
    return info


class Reviews:
    """The handlers; `install(table)` maps (group, plural) to them."""

    def __init__(self, chain: AuthorizerChain, rbac: RBACAuthorizer) -> None:
        self.chain = chain
        self.rbac = rbac

    def install(self, table: dict) -> None:
        table[(_AUTHZ, "selfsubjectaccessreviews")] = self.self_subject_access_review
        table[(_AUTHZ, "selfsubjectrulesreviews")] = self.self_subject_rules_review
        table[(_AUTHZ, "subjectaccessreviews")] = self.subject_access_review
        table[(_AUTHZ, "localsubjectaccessreviews")] = self.local_subject_access_review
        table[(_AUTHN, "selfsubjectreviews")] = self.self_subject_review

    def _decide(self, out: dict, attrs: Attributes) -> dict:
        out["status"] = {"allowed": self.chain.allows(attrs)}
        return out

    async def self_subject_access_review(self, body: object, user: User,
                                         namespace: str | None) -> dict:
        out = _review(body, "SelfSubjectAccessReview", _AUTHZ)
        return self._decide(out, _attributes(out["kind"], out["spec"], user, None))

    async def subject_access_review(self, body: object, user: User,
                                    namespace: str | None) -> dict:
        out = _review(body, "SubjectAccessReview", _AUTHZ)
        subject = _subject(out["spec"])
        return self._decide(out, _attributes(out["kind"], out["spec"], subject, None))

    async def local_subject_access_review(self, body: object, user: User,
                                          namespace: str | None) -> dict:
        out = _review(body, "LocalSubjectAccessReview", _AUTHZ)
        out["metadata"]["namespace"] = namespace
        subject = _subject(out["spec"])
        if out["spec"].get("nonResourceAttributes") is not None:
            raise _invalid(out["kind"], "spec.nonResourceAttributes",
                           "disallowed on this kind of request")
        return self._decide(out, _attributes(out["kind"], out["spec"], subject, namespace))

    async def self_subject_rules_review(self, body: object, user: User,
                                        namespace: str | None) -> dict:
        out = _review(body, "SelfSubjectRulesReview", _AUTHZ)
        ns = _str(out["spec"], "namespace") or None
        rules = [normalized(r) for r in self.rbac.rules_for(user, ns)]
        resource = [r for r in rules if "nonResourceURLs" not in r]
        non_resource = [r for r in rules if "nonResourceURLs" in r]
        if user.is_admin:  # SystemMasters allows all, whatever is bound
            resource = [r for r in _FULL_RESOURCES if r not in resource] + resource
            non_resource = [r for r in _FULL_URLS if r not in non_resource] + non_resource
        for r in resource:
            r.setdefault("apiGroups", [])
            r.setdefault("resources", [])
        # a node's access is decided per object by the Node authorizer's graph: not
        # expressible as rules
        out["status"] = {"resourceRules": resource, "nonResourceRules": non_resource,
                         "incomplete": user.node_name is not None}
        return out

    async def self_subject_review(self, body: object, user: User,
                                  namespace: str | None) -> dict:
        out = _review(body, "SelfSubjectReview", _AUTHN)
        out.pop("spec")
        out["status"] = {"userInfo": _user_info(user)}
        return out
