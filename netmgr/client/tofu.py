"""The client TLS context and 1.0's trust on first use of a Manager's certificate.

The trusted certificate of a host is cached as ``<home>/certs/<host>.crt`` (home from
:func:`netmgr.hostinfo.cert_dir`). The only I/O is that cache, one ``ssl.get_server_certificate``
when the cache is empty, and the ``Continue? y/n`` prompt on the terminal.
"""
import os
import ssl
import textwrap

from netmgr import hostinfo


def cert_path(host):
    """1.0's cache of trusted certificates: ``<home>/certs/<host>.crt``."""
    return os.path.join(hostinfo.cert_dir(), f"{host}.crt")


def get_ssl_context(*, cert_file=None, host=None, port=None, auto_save=False, **kwargs):
    """Return ``(path, ssl.SSLContext)`` as 1.0's ``msl.network.cryptography.get_ssl_context``.

    The CA file is ``cert_file``, or the cached ``<home>/certs/<host>.crt``. When neither exists
    the server's certificate is fetched (trust on first use): unless ``auto_save``, its SHA-256
    and SHA-1 fingerprints are shown and the user is asked ``Continue? y/n``; a "no" returns
    ``('', None)``. The accepted certificate is saved to the cache and loaded.
    ``kwargs`` go to :func:`ssl.get_server_certificate` (e.g. ``timeout``).
    """
    ca_file = cert_file or cert_path(host)
    try:
        return ca_file, _client_context(ca_file)
    except FileNotFoundError:
        if cert_file is not None:
            raise

    if host is None or port is None:
        raise ValueError("Must specify the host and port or the cert_file")

    cert_data = ssl.get_server_certificate((host, port), **kwargs).encode()
    if not auto_save and not _user_trusts(host, cert_data):
        return "", None

    os.makedirs(os.path.dirname(os.path.abspath(ca_file)), exist_ok=True)
    with open(ca_file, mode="wb") as f:
        f.write(cert_data)
    return ca_file, _client_context(ca_file)


def _user_trusts(host, cert_data):
    """Show the certificate's fingerprints and ask ``Continue? y/n`` (1.0's texts)."""
    from netmgr import certinfo  # cryptography is imported only for a first-use prompt

    cert = certinfo.load_certificate(cert_data)
    name = cert.signature_algorithm_oid._name  # noqa: SLF001 -- 1.0 shows this name
    p1 = (f"The certificate for {host} is not cached in the registry. You have no "
          f"guarantee that the server is the computer that you think it is.")
    p2 = (f"\nThe server's {name} key fingerprint is\n"
          f"SHA256: {certinfo.fingerprint(cert, 'SHA256')}\n"
          f"SHA1:   {certinfo.fingerprint(cert, 'SHA1')}\n")
    p3 = ("If you trust this host you can save the certificate in the registry "
          "and continue to connect, otherwise this is your final chance to abort.")
    print("\n".join(textwrap.wrap(p1, width=60)))
    print(p2)
    print("\n".join(textwrap.wrap(p3, width=60)))
    print("")
    while True:
        r = input("Continue? y/n: ").lower()
        if r.startswith("n"):
            return False
        if r.startswith("y"):
            return True


def _client_context(ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
