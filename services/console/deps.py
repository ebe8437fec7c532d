"""What every console route needs, as FastAPI dependencies that really check.

`Caller`: the signed-in person (no session, an expired one or one without its token is a redirect to
/login). `Posted`: the same plus the posted form, whose CSRF token must match the session's (403
otherwise). `Form`: a form posted with or without a sign-in (sign-in, sign-out, language), CSRF checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from services.console.i18n import Translator
from services.console.session import Session
from services.console.upstream import Upstream
from services.console.web import Forbidden, SignInRequired, current_session, language, read_form, translator, upstream


@dataclass
class Caller:
    request: Request
    session: Session
    token: str
    t: Translator
    lang: str

    @property
    def api(self) -> Upstream:
        return upstream(self.request)

    @property
    def role(self) -> str:
        return self.session.role or ""

    @property
    def municipality(self) -> str:
        return self.session.municipality or ""


@dataclass
class Posted(Caller):
    form: FormData


def _caller(request: Request) -> Caller:
    session = current_session(request)
    if session is None or not session.signed_in or not session.token:
        raise SignInRequired
    return Caller(request, session, session.token, translator(request), language(request))


async def _posted(request: Request) -> Posted:
    caller = _caller(request)
    form = await read_form(request)
    return Posted(caller.request, caller.session, caller.token, caller.t, caller.lang, form)


SignedIn = Annotated[Caller, Depends(_caller)]
PostedForm = Annotated[Posted, Depends(_posted)]
CsrfForm = Annotated[FormData, Depends(read_form)]


def require(caller: Caller, *roles: str) -> None:
    """A page or action the role has no use for: 403 (the API would refuse it too)."""
    if caller.role not in roles:
        raise Forbidden
