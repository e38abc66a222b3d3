"""An application server and a client talking both ways through rts-server.

Client -> app server: the client names the app server with set_server_params(signature, url);
each send_server_message becomes an HTTP POST to that url with the JSON body
{"message": ..., "binary": ..., "signature": ...} and the headers X-Rts-App-Id / X-Rts-User-Id;
the HTTP response body comes back to the client as the send result.
App server -> client: the push API of rts-server (POST /?Action=SendUnicast&Version=2020-12-01,
shaped like Volcengine's OpenAPI), signed with Volcengine's V4 signature by an access key.

Run: python examples/app_server.py   (needs: pip install 'rts_sync[server]')
  Starts an rts-server in this process, the app server on a loopback port and a client.
Or, against a running `rts-server --app APP_ID:APP_KEY --access-key AK:SK`:
  python examples/app_server.py --serve --rts-http http://127.0.0.1:8970 --app-id APP_ID \\
      --ak AK --sk SK --port 8080
  and in the clients: rts.set_server_params(signature_for(uid), "http://127.0.0.1:8080/rts")
"""

import argparse
import hashlib
import hmac
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import rts_sync
from rts_sync.server.signing import sign_request
from rts_sync.testing import serve_in_thread
from rts_sync.token import mint_login_token

APP_ID, APP_KEY = "exampleapp00000000000001", "example-key"
AK, SK = "AKexample", "example-secret"  # an access key of the push API
APP_SECRET = b"only the app server knows this"


def signature_for(uid):
    """What the app gives each user for set_server_params: proves the POST is about that user."""
    return hmac.new(APP_SECRET, uid.encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------ the application server
def push(rts_http, app_id, ak, sk, action, body):
    """Call the push API (the same request Volcengine's SDKs send to rtc.volcengineapi.com)."""
    url = "%s/?Action=%s&Version=2020-12-01" % (rts_http, action)
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, sign_request("POST", url, data, ak, sk), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def make_app_server(rts_http, app_id, ak, sk, port=0):
    class AppServer(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            uid = self.headers["X-Rts-User-Id"]
            if not hmac.compare_digest(body["signature"], signature_for(uid)):
                self.send_response(403)
                self.end_headers()
                return
            answer = b"got it"
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)  # the client's send result
            self.wfile.flush()
            print("app server: %s sent %r (binary: %s)" % (uid, body["message"], body["binary"]))
            reply = {"AppId": app_id, "From": "app-server", "To": uid, "Binary": False,
                     "Message": "you said %s" % body["message"]}
            push(rts_http, app_id, ak, sk, "SendUnicast", reply)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default (5) drops bursts of connections

    return Server(("127.0.0.1", port), AppServer)


# ------------------------------------------------------------------------ a client
class Client(rts_sync.RTSEventHandler):
    def __init__(self):
        self.pushed = threading.Event()

    def on_server_params_set_result(self, error):
        print("alice: server params set (%d)" % error)

    def on_server_message_send_result(self, msgid, error, message):
        print("alice: message %d to the app server: %d, answer %r" % (msgid, error, message))

    def on_message_received(self, uid, message):
        print("alice: pushed by %s: %s" % (uid, message))
        self.pushed.set()


def demo():
    with serve_in_thread(apps={APP_ID: APP_KEY}, access_keys={AK: SK}) as server:
        app_server = make_app_server(server.http_url, APP_ID, AK, SK)
        threading.Thread(target=app_server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/rts" % app_server.server_address[1]
        client = Client()
        with rts_sync.create_rts(APP_ID, client, server_url=server.url) as rts:
            rts.login(mint_login_token(APP_ID, APP_KEY, "alice"), "alice").result(timeout=10)
            rts.set_server_params(signature_for("alice"), url).result(timeout=10)
            answer = rts.send_server_message("hello").result(timeout=10)
            assert answer == b"got it", answer
            assert client.pushed.wait(10), "no push from the app server"
        app_server.shutdown()
        app_server.server_close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run only the app server")
    parser.add_argument("--rts-http", default="http://127.0.0.1:8970")
    parser.add_argument("--app-id", default=APP_ID)
    parser.add_argument("--ak", default=AK)
    parser.add_argument("--sk", default=SK)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if not args.serve:
        demo()
        return
    server = make_app_server(args.rts_http, args.app_id, args.ak, args.sk, args.port)
    print("app server on http://127.0.0.1:%d/rts, pushing to %s" % (args.port, args.rts_http))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
