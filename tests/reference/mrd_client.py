"""A scanner-side MRD streaming client built on the ISMRMRD project's own Python package
(`ismrmrd.serialization`): streams an MRD file's header and acquisitions to a reconstruction server
and collects what comes back, as python-ismrmrd-server's client.py does.

usage: mrd_client.py HOST PORT INPUT.h5 OUT.npz [--config NAME] [--params JSON] [--mrd-out FILE]
                     [--stop-after N] [--header-xml FILE] [--tls-ca CA --tls-cert C --tls-key K]

OUT.npz holds each image's pixels `[rows, columns]` as `img_000`, `img_001`, ... (float32; uint16
images converted to float32; complex images complex64) in the order they arrived; OUT.npz.json the
list of image headers (series and image index, counters, matrix, field of view, position,
directions, data type, meta attributes) and the TEXT messages. --mrd-out also writes the images into an MRD file (ismrmrd.Dataset).
--stop-after N sends only N acquisitions and then drops the connection (a client vanishing
mid-scan). --header-xml sends another header than the file's.
"""
import argparse
import json
import socket
import ssl
import threading
import time

import ismrmrd
import ismrmrd.serialization as ser
import ismrmrd.xsd
import numpy as np


def acquisitions(path):
    d = ismrmrd.Dataset(path, "dataset", False)
    xml = d.read_xml_header().decode()
    acqs = [d.read_acquisition(i) for i in range(d.number_of_acquisitions())]
    d.close()
    return xml, acqs


def meta(attr):
    out = {}
    if not attr:
        return out
    m = ismrmrd.Meta.deserialize(attr)
    for k in m.keys():
        out[k] = m[k]
    return out


def save(out, images, texts):
    headers = []
    arrays = {}
    for k, im in enumerate(images):
        h = im.getHead()
        headers.append({
            "series": h.image_series_index,
            "index": h.image_index,
            "slice": h.slice,
            "repetition": h.repetition,
            "contrast": h.contrast,
            "matrix": list(h.matrix_size),
            "fov": [float(v) for v in h.field_of_view],
            "position": [float(v) for v in h.position],
            "read_dir": [float(v) for v in h.read_dir],
            "phase_dir": [float(v) for v in h.phase_dir],
            "slice_dir": [float(v) for v in h.slice_dir],
            "data_type": h.data_type,
            "image_type": h.image_type,
            "measurement_uid": h.measurement_uid,
            "acquisition_time_stamp": h.acquisition_time_stamp,
            "meta": meta(im.attribute_string),
        })
        px = np.squeeze(np.array(im.data))  # [channels, z, y, x] -> [y, x]
        arrays["img_%03d" % k] = px.astype(np.complex64 if np.iscomplexobj(px) else np.float32)
    np.savez(out, **arrays)
    with open(out + ".json", "w") as f:
        json.dump({"images": headers, "texts": texts}, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--config", default="inferd")
    p.add_argument("--params", default=None)
    p.add_argument("--mrd-out", default=None)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--header-xml", default=None, help="send this XML file as the header")
    p.add_argument("--pause-before-close", type=float, default=0.0,
                   help="seconds to wait after the last acquisition before CLOSE")
    p.add_argument("--tls-ca", default=None, help="connect with TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", default=None, help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", default=None, help="its private key (PEM)")
    a = p.parse_args()

    xml, acqs = acquisitions(a.input)
    if a.header_xml:
        xml = open(a.header_xml).read()
    sock = socket.create_connection((a.host, a.port))
    if a.tls_ca:
        ctx = ssl.create_default_context(cafile=a.tls_ca)
        if a.tls_cert:
            ctx.load_cert_chain(a.tls_cert, a.tls_key)
        sock = ctx.wrap_socket(sock, server_hostname=a.host)
    rfile = sock.makefile("rb")
    wfile = sock.makefile("wb")
    images, texts = [], []

    def receive():
        try:
            for obj in ser.ProtocolDeserializer(rfile).deserialize():
                if isinstance(obj, ismrmrd.Image):
                    images.append(obj)
                elif isinstance(obj, str):
                    texts.append(str(obj))
        except EOFError:
            texts.append("EOF before CLOSE")

    t = threading.Thread(target=receive)
    t.start()
    s = ser.ProtocolSerializer(wfile)
    s.serialize(ser.ConfigFile(a.config))
    if a.params is not None:
        s.serialize(ser.ConfigText(a.params))
    s.serialize(ismrmrd.xsd.CreateFromDocument(xml))
    try:
        for i, acq in enumerate(acqs):
            if a.stop_after is not None and i >= a.stop_after:
                wfile.flush()
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                t.join(timeout=30)
                save(a.out, [], texts)
                return
            s.serialize(acq)
        wfile.flush()
        time.sleep(a.pause_before_close)
        s.close()
        wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server refused and closed; what it said is in `texts`
    t.join(timeout=600)
    sock.close()

    save(a.out, images, texts)
    if a.mrd_out:
        d = ismrmrd.Dataset(a.mrd_out, "dataset", True)
        d.write_xml_header(xml.encode())
        for im in images:
            d.append_image("image_%d" % im.getHead().image_series_index, im)
        d.close()


if __name__ == "__main__":
    main()
