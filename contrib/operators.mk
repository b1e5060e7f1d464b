# operators: the Debian package (debian/), Prometheus rules, the Grafana
# dashboard's metrics, Kubernetes manifests, and their tests (included by
# Makefile.am).  See README.md, "Operators".
EXTRA_DIST += contrib/prometheus/tierd-rules.yml contrib/prometheus/tierd-rules.test.yml \
	contrib/prometheus/prometheus.yml \
	contrib/kubernetes/tierd-daemonset.yaml contrib/kubernetes/tierd-inference-pod.yaml

# promtool check/test rules; a real prometheus server scraping a live tierd.
TESTS += tests/prometheus-rules.sh tests/prometheus-live.sh
EXTRA_DIST += tests/prometheus-rules.sh tests/prometheus-live.sh

# The manifests parsed and checked against the unit and the configuration.
TESTS += tests/kubernetes.sh
EXTRA_DIST += tests/kubernetes.sh tests/kubernetes-check.py

# dpkg-buildpackage on a copy of the checkout, then the packages installed in
# the VM suite's systemd guest.  debian/ stays out of the tarball, so both
# skip under make distcheck: the package is built once per suite run.
TESTS += tests/deb.sh tests/vm/deb.sh
EXTRA_DIST += tests/deb.sh tests/vm/deb.sh tests/vm/guest-deb.sh
tests/vm/deb.log: tests/deb.log
clean-local:
	rm -rf tests/debs
