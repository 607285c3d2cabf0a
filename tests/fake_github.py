"""A loopback stand-in for GitHub's OAuth and user API, so GitHub login is tested end to end.

allauth's GitHub provider runs unchanged against it: the browser (or the test client) is sent
to ``/login/oauth/authorize``, which redirects straight back to the site with a code and the
state it was given (as GitHub does once the person clicks "Authorize"); the site then trades
the code at ``/login/oauth/access_token`` and reads ``/user`` and ``/user/emails`` (served both
at the root, like api.github.com, and under ``/api/v3``, like GitHub Enterprise, which is where
allauth's ``GITHUB_URL`` setting sends it).

Use the ``fake_github`` fixture: it starts the server once per session, points allauth at it
for one test (client id ``fake-client-id``, secret ``fake-client-secret``) and gives a
``FakeGitHub`` whose ``user`` and ``emails`` say who signs in. With the Django test client::

    response = client.post("/accounts/github/login/?process=login")   # leave for "GitHub"
    back = fake_github.authorize(response["Location"])               # "Authorize" clicked
    client.get(back)                                                  # the site's callback

(``back`` is the callback's path and query). A browser simply follows the redirects: the fake
answers on ``fake_github.url``, a loopback address the browser can reach.
"""

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"


@dataclass
class FakeGitHub:
    """What the fake answers, and what it was asked (``requests``: (method, path) pairs)."""

    url: str
    user: dict = field(default_factory=dict)
    emails: list = field(default_factory=list)
    deny: bool = False  # the person clicks "Cancel" on GitHub's page
    codes: dict = field(default_factory=dict)  # code -> token
    tokens: set = field(default_factory=set)
    requests: list = field(default_factory=list)
    token_requests: list = field(default_factory=list)  # the form of each token exchange

    def reset(self) -> None:
        self.sign_in_as(login="octocat", id=4242, email="octocat@example.com")
        self.deny = False
        self.codes.clear()
        self.tokens.clear()
        self.requests.clear()
        self.token_requests.clear()

    def sign_in_as(
        self, *, login: str, id: int, email: str | None, verified: bool = True, name: str = ""
    ) -> None:
        """Who is signed in to "GitHub": its /user and /user/emails answers."""
        self.user = {
            "login": login,
            "id": id,
            "node_id": f"U_{id}",
            "name": name or login.title(),
            "email": email,
            "avatar_url": "",
            "html_url": f"{self.url}/{login}",
        }
        self.emails = (
            [{"email": email, "primary": True, "verified": verified, "visibility": "public"}]
            if email
            else []
        )

    def authorize(self, authorize_url: str) -> str:
        """Visit the authorize URL the site redirected to, as a browser would; the path and
        query of the site's callback it sends the browser back to."""
        response = httpx.get(authorize_url, follow_redirects=False)
        assert response.status_code == 302, response.text
        back = urlsplit(response.headers["location"])
        return f"{back.path}?{back.query}"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub  # set on the subclass each server makes

    def log_message(self, format, *args):  # quiet
        pass

    def _json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urlsplit(self.path)
        path = parts.path.removeprefix("/api/v3")
        self.fake.requests.append(("GET", parts.path))
        if parts.path == "/login/oauth/authorize":
            return self._authorize(parse_qs(parts.query))
        token = self.headers.get("Authorization", "").removeprefix("token ").strip()
        if path in ("/user", "/user/emails") and token not in self.fake.tokens:
            return self._json(401, {"message": "Bad credentials"})
        if path == "/user":
            return self._json(200, self.fake.user)
        if path == "/user/emails":
            return self._json(200, self.fake.emails)
        return self._json(404, {"message": "Not Found"})

    def do_POST(self):
        parts = urlsplit(self.path)
        self.fake.requests.append(("POST", parts.path))
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if parts.path != "/login/oauth/access_token":
            return self._json(404, {"message": "Not Found"})
        self.fake.token_requests.append(form)
        token = self.fake.codes.pop(form.get("code", ""), None)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return self._json(200, {"error": "incorrect_client_credentials"})
        if token is None:
            return self._json(200, {"error": "bad_verification_code"})
        return self._json(
            200, {"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"}
        )

    def _authorize(self, query: dict) -> None:
        redirect_uri = query["redirect_uri"][0]
        state = query.get("state", [""])[0]
        if self.fake.deny or query.get("client_id", [""])[0] != CLIENT_ID:
            back = {"error": "access_denied", "state": state}
        else:
            code, token = secrets.token_hex(8), f"gho_{secrets.token_hex(16)}"
            self.fake.codes[code] = token
            self.fake.tokens.add(token)
            back = {"code": code, "state": state}
        self.send_response(302)
        self.send_header("Location", f"{redirect_uri}?{urlencode(back)}")
        self.send_header("Content-Length", "0")
        self.end_headers()


def start_fake_github() -> tuple[FakeGitHub, ThreadingHTTPServer]:
    """Serve a FakeGitHub on a free loopback port, in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fake = FakeGitHub(url=f"http://127.0.0.1:{server.server_address[1]}")
    fake.reset()
    server.RequestHandlerClass = type("Handler", (_Handler,), {"fake": fake})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake, server


@pytest.fixture(scope="session")
def fake_github_server():
    fake, server = start_fake_github()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_github(fake_github_server, settings, monkeypatch) -> FakeGitHub:
    """GitHub login pointed at the fake for this test, signed in as octocat (id 4242,
    octocat@example.com, verified) unless the test says otherwise."""
    from allauth.socialaccount.providers.github.views import GitHubOAuth2Adapter

    fake = fake_github_server
    fake.reset()
    settings.SOCIALACCOUNT_PROVIDERS = {
        "github": {
            "SCOPE": ["read:user", "user:email"],
            "GITHUB_URL": fake.url,
            "APP": {"client_id": CLIENT_ID, "secret": CLIENT_SECRET},
        }
    }
    # allauth reads GITHUB_URL when its views module is imported, before any test runs; the
    # URLs it derived are class attributes, pointed at the fake here for this test only.
    for name, path in (
        ("web_url", ""),
        ("api_url", "/api/v3"),
        ("access_token_url", "/login/oauth/access_token"),
        ("authorize_url", "/login/oauth/authorize"),
        ("profile_url", "/api/v3/user"),
        ("emails_url", "/api/v3/user/emails"),
    ):
        monkeypatch.setattr(GitHubOAuth2Adapter, name, fake.url + path)
    return fake
