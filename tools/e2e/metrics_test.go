package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads the driver's /metrics.
func scrape(ctx context.Context, r *rig.Rig) ([]sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.DriverHTTPAddress+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, body)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseSample parses `name{k="v",...} value` (label values without escaped quotes or commas, as the
// driver's are).
func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, fmt.Errorf("metrics line %q: unbalanced braces", line)
		}
		s.name = line[:i]
		for _, kv := range strings.Split(line[i+1:j], ",") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return s, fmt.Errorf("metrics line %q: bad label %q", line, kv)
			}
			s.labels[k] = strings.Trim(v, `"`)
		}
		rest = strings.TrimSpace(line[j+1:])
	} else {
		var ok bool
		s.name, rest, ok = strings.Cut(line, " ")
		if !ok {
			return s, fmt.Errorf("metrics line %q: no value", line)
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return s, fmt.Errorf("metrics line %q: no value", line)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("metrics line %q: %w", line, err)
	}
	s.value = v
	return s, nil
}

// find returns the samples named name whose labels include want.
func find(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
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
