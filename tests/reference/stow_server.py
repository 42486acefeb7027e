"""A minimal DICOMweb STOW-RS endpoint over HTTPS, built from Python's own http.server and ssl and
pydicom, to check inferd's STOW-RS client over TLS with a bearer token.

usage: stow_server.py PORT_FILE CERT.pem KEY.pem TOKEN OUT_DIR

Listens on 127.0.0.1 (a free port, written to PORT_FILE). POST /dicom-web/studies with
`Authorization: Bearer TOKEN` and a `multipart/related; type="application/dicom"` body: every part
is read by pydicom, saved as OUT_DIR/<SOPInstanceUID>.dcm, and the answer is 200 with the Referenced
SOP Sequence (DICOM JSON). Wrong token: 401; another path: 404; a part pydicom cannot read: 409.
"""
import io
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import pydicom

PORT_FILE, CERT, KEY, TOKEN, OUT = sys.argv[1:6]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body=b"", ctype="application/dicom+json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.answer(401)
        if self.path != "/dicom-web/studies":
            return self.answer(404)
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/related") or 'type="application/dicom"' not in ctype:
            return self.answer(415)
        boundary = [p.split("=", 1)[1].strip('"') for p in ctype.split(";")
                    if p.strip().startswith("boundary=")]
        if not boundary:
            return self.answer(400)
        refs = []
        # RFC 2046: parts between "--boundary" lines; the last delimiter is "--boundary--"
        for chunk in body.split(b"--" + boundary[0].encode())[1:]:
            if chunk.startswith(b"--"):
                break
            headers, _, data = chunk.partition(b"\r\n\r\n")
            data = data[:-2] if data.endswith(b"\r\n") else data
            try:
                ds = pydicom.dcmread(io.BytesIO(data))
            except Exception:
                return self.answer(409)
            uid = str(ds.SOPInstanceUID)
            with open(os.path.join(OUT, uid + ".dcm"), "wb") as f:
                f.write(data)
            refs.append({"00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                         "00081155": {"vr": "UI", "Value": [uid]}})
        self.answer(200, json.dumps({"00081199": {"vr": "SQ", "Value": refs}}).encode())


server = HTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
