"""A schemathesis check of our own, loaded by the fuzz runs (SCHEMATHESIS_HOOKS=tests.fuzz.checks)."""
import schemathesis
from schemathesis.core.parameters import ParameterLocation


@schemathesis.check
def refused_without_a_token(ctx, response, case):
    """SPEC section 5: a JSON API call without a valid token is 401, whatever its body."""
    if not case.operation.path.startswith("/api/") or "Authorization" in response.request.headers:
        return None
    # An invalid path parameter can miss the operation's route, and then no operation answers.
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
        return None
    if response.status_code != 401:
        raise AssertionError(f"{case.method} {case.operation.path} answered {response.status_code} "
                             f"without a token, not 401")
    return None
