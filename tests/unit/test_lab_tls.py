"""The lab's S3 over TLS: a certificate pgBackRest accepts, boto3 trusting the lab CA, a clean TLS close."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys

from cryptography import x509

from regionops.drivers.aws import s3_client
from regionops.lab.processes import wait_for_port
from regionops.lab.tls import LabTls, serves_tls
from regionops.topology import parse_topology
from tests.unit.test_awsserver import topology_for
from tests.unit.test_objectstore import free_port


def test_certificate_names_the_loopback_address_as_ip_and_as_dns(tmp_path):
    tls = LabTls(tmp_path / "tls")
    assert tls.ensure() is True
    assert tls.ensure() is False  # kept across `lab up`s
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"127.0.0.1", "localhost"} <= set(san.get_values_for_type(x509.DNSName))  # pgBackRest reads DNS only
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert oct(tls.key_file.stat().st_mode & 0o777) == "0o600"


def test_https_server_is_trusted_through_the_ca_and_closes_tls_cleanly(tmp_path):
    tls = LabTls(tmp_path / "tls")
    tls.ensure()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "regionops.lab.awsserver",
            "--port",
            str(port),
            "--state-file",
            str(tmp_path / "state"),
            "--cert",
            str(tls.cert_file),
            "--key",
            str(tls.key_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, what="awsserver", pid=proc.pid)
        assert serves_tls(port, tls.ca_file)
        doc = topology_for(port).model_dump(exclude_none=True)
        doc["aws"] = {"endpoint_url": f"https://127.0.0.1:{port}", "ca_bundle": str(tls.ca_file)}
        s3 = s3_client(parse_topology(doc), "eu-west-1")
        s3.create_bucket(Bucket="tls-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="tls-eu", Key="k", Body=b"over tls")
        assert s3.get_object(Bucket="tls-eu", Key="k")["Body"].read() == b"over tls"

        # A raw HTTP/1.0 request: the server must end with close_notify, not a bare TCP close.
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as conn:
                conn.sendall(b"GET /tls-eu/k HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while chunk := conn.recv(65536):  # SSLEOFError here when the server skips close_notify
                    data += chunk
        assert data.startswith(b"HTTP/1.")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
