package rig

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestScrapeMetrics reads what client_golang's handler serves and sums the series that match.
func TestScrapeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rpc_total", Help: "Calls."}, []string{"method", "code"})
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "up_members", Help: "Members."})
	reg.MustRegister(calls, up)
	calls.WithLabelValues("Create", "OK").Add(3)
	calls.WithLabelValues("Create", "Internal").Add(1)
	calls.WithLabelValues(`Get "x", y`, "OK").Add(7)
	up.Set(2)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	families, err := ScrapeMetrics(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		metric string
		want   map[string]string
		value  float64
		found  bool
	}{
		{"every series", "rpc_total", nil, 11, true},
		{"one label", "rpc_total", map[string]string{"method": "Create"}, 4, true},
		{"two labels", "rpc_total", map[string]string{"method": "Create", "code": "OK"}, 3, true},
		{"quoted label value", "rpc_total", map[string]string{"method": `Get "x", y`}, 7, true},
		{"no such series", "rpc_total", map[string]string{"method": "Delete"}, 0, false},
		{"gauge", "up_members", nil, 2, true},
		{"no such family", "down_members", nil, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			value, found := MetricValue(families, tc.metric, tc.want)
			if value != tc.value || found != tc.found {
				t.Errorf("MetricValue(%s, %v) = %v, %v; want %v, %v", tc.metric, tc.want, value, found, tc.value, tc.found)
			}
		})
	}
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	if _, err := ScrapeMetrics(context.Background(), notFound.URL); err == nil {
		t.Error("a 404 answer scraped without an error")
	}
}
