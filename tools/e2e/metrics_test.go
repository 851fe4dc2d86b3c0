package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// sample is one series of the Prometheus text format, as a line of it reads: a histogram or summary
// becomes its _bucket (or quantile), _sum and _count series.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads the driver's /metrics (rig.ScrapeMetrics) as samples.
func scrape(ctx context.Context, r *rig.Rig) ([]sample, error) {
	families, err := rig.ScrapeMetrics(ctx, "http://"+r.DriverHTTPAddress+"/metrics")
	if err != nil {
		return nil, err
	}
	return flatten(families)
}

// parseMetrics flattens the text exposition in into samples.
func parseMetrics(in io.Reader) ([]sample, error) {
	families, err := rig.ParseMetrics(in)
	if err != nil {
		return nil, err
	}
	return flatten(families)
}

// flatten turns metric families into samples.
func flatten(families map[string]*dto.MetricFamily) ([]sample, error) {
	var out []sample
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			with := func(k, v string) map[string]string {
				l := maps.Clone(labels)
				l[k] = v
				return l
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out = append(out, sample{name, labels, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				out = append(out, sample{name, labels, m.GetGauge().GetValue()})
			case dto.MetricType_UNTYPED:
				out = append(out, sample{name, labels, m.GetUntyped().GetValue()})
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					le := strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)
					out = append(out, sample{name + "_bucket", with("le", le), float64(b.GetCumulativeCount())})
				}
				out = append(out, sample{name + "_sum", labels, h.GetSampleSum()}, sample{name + "_count", labels, float64(h.GetSampleCount())})
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					out = append(out, sample{name, with("quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)), q.GetValue()})
				}
				out = append(out, sample{name + "_sum", labels, sm.GetSampleSum()}, sample{name + "_count", labels, float64(sm.GetSampleCount())})
			default:
				return nil, fmt.Errorf("parsing /metrics: %s has type %s, which the e2e tests do not read", name, mf.GetType())
			}
		}
	}
	return out, nil
}

// find returns the samples named name whose labels include want.
func find(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name == name && rig.LabelsInclude(s.labels, want) {
			out = append(out, s)
		}
	}
	return out
}

// TestE2EMetrics scrapes the driver's /metrics after a group snapshot: the successful create is
// counted and the health of the cluster under test is published.
func TestE2EMetrics(t *testing.T) {
	r, ctx := setup(t)
	readyGroup(t, ctx, r, uniqueName("e2e-metrics"))
	samples, err := scrape(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	ops := find(samples, "etcd_snapshot_driver_snapshot_operations_total", map[string]string{"operation": "create", "result": "success"})
	if len(ops) != 1 || ops[0].value < 1 {
		t.Errorf("etcd_snapshot_driver_snapshot_operations_total{operation=\"create\",result=\"success\"} = %v, want one sample >= 1", ops)
	}
	cluster := map[string]string{"namespace": r.Namespace, "cluster": rig.EtcdClusterName}
	for name, want := range map[string]float64{
		"etcd_snapshot_driver_cluster_healthy_members": 3,
		"etcd_snapshot_driver_cluster_quorum":          1,
		"etcd_snapshot_driver_cluster_leader_present":  1,
	} {
		got := find(samples, name, cluster)
		if len(got) != 1 || got[0].value != want {
			t.Errorf("%s%v = %v, want one sample of %v", name, cluster, got, want)
		}
	}
	// The rig's one replica leads (leader election is on, as shipped) and holds the Lease.
	if got := find(samples, "etcd_snapshot_driver_leader", nil); len(got) != 1 || got[0].value != 1 {
		t.Errorf("etcd_snapshot_driver_leader = %v, want one sample of 1", got)
	}
	lease, err := r.Kube.CoordinationV1().Leases(rig.DriverNamespace).Get(ctx, driver.DefaultLeaseName, metav1.GetOptions{})
	if err != nil || ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
		t.Errorf("Lease %s/%s: %+v, %v; want it held by the driver", rig.DriverNamespace, driver.DefaultLeaseName, lease, err)
	}
	if got := find(samples, "etcd_snapshot_driver_rpc_total", map[string]string{"method": "CreateVolumeGroupSnapshot", "code": "OK"}); len(got) == 0 {
		var methods []string
		for _, s := range find(samples, "etcd_snapshot_driver_rpc_total", nil) {
			methods = append(methods, s.labels["method"]+"/"+s.labels["code"])
		}
		t.Errorf("no etcd_snapshot_driver_rpc_total for CreateVolumeGroupSnapshot with code OK; have %v", methods)
	}
}

// TestParseMetrics reads what client_golang's handler serves, label values with quotes and commas and
// a histogram included, which a line-by-line reading of the format gets wrong.
func TestParseMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ops_total", Help: "Operations."}, []string{"reason"})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "Latency.", Buckets: []float64{0.5, 2}})
	reg.MustRegister(ops, lat)
	ops.WithLabelValues(`said "no", twice`).Add(3)
	lat.Observe(1)
	lat.Observe(4)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples, err := parseMetrics(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ops_total", map[string]string{"reason": `said "no", twice`}, 3},
		{"latency_seconds_bucket", map[string]string{"le": "0.5"}, 0},
		{"latency_seconds_bucket", map[string]string{"le": "2"}, 1},
		{"latency_seconds_bucket", map[string]string{"le": "+Inf"}, 2},
		{"latency_seconds_sum", nil, 5},
		{"latency_seconds_count", nil, 2},
	}
	for _, c := range cases {
		if got := find(samples, c.name, c.labels); len(got) != 1 || got[0].value != c.want {
			t.Errorf("%s%v = %v, want one sample of %v", c.name, c.labels, got, c.want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("ops_total{reason=\"x} 1\n")); err == nil {
		t.Error("an unterminated label value parsed without an error")
	}
}
