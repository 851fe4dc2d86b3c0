package driver

import (
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpHandler serves /metrics from Registry and the kubelet probes.
func (d *Driver) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry}))
	mux.HandleFunc("/healthz", d.healthz)
	mux.HandleFunc("/ready", d.ready)
	return mux
}

// healthz is the liveness probe: the gRPC server is serving and its socket is still in place (an
// emptyDir wiped under a running pod would otherwise leave the sidecar talking to nothing). It does
// not depend on the Kubernetes API, so an API outage never restarts the driver.
func (d *Driver) healthz(w http.ResponseWriter, _ *http.Request) {
	if !d.serving.Load() {
		http.Error(w, "gRPC server is not serving", http.StatusServiceUnavailable)
		return
	}
	if fi, err := os.Stat(d.socketPath); err != nil || fi.Mode()&os.ModeSocket == 0 {
		http.Error(w, fmt.Sprintf("CSI socket %s is gone", d.socketPath), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// ready is the readiness probe and mirrors CSI Probe: the engine's informers have synced and the
// Kubernetes API answers.
func (d *Driver) ready(w http.ResponseWriter, _ *http.Request) {
	if !d.serving.Load() || !d.engine.Ready() {
		http.Error(w, "not ready: waiting for the Kubernetes API and the informer caches", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
