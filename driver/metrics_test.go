package driver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// healthSeries are the per-cluster health series, by metric name without the namespace prefix.
var healthSeries = []string{"cluster_healthy_members", "cluster_quorum", "cluster_leader_present", "health_check_timestamp_seconds"}

// healthReasons are the reason label values of health_check_errors_total.
var healthReasons = []string{"tls", "auth", "unreachable", "quorum", "alarm"}

// sample reads one series from the driver's registry as /metrics would expose it; ok is false when
// the series is not exported.
func sample(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != metricsNamespace+"_"+name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// hasLabels reports whether m carries every given label with its value.
func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// healthView is everything /metrics says about one cluster's health.
type healthView struct {
	gauges map[string]float64 // present series only
	errors map[string]float64 // by reason, present series only
}

func viewHealth(t *testing.T, cluster string) healthView {
	t.Helper()
	v := healthView{gauges: map[string]float64{}, errors: map[string]float64{}}
	labels := map[string]string{"namespace": fxNS, "cluster": cluster}
	for _, name := range healthSeries {
		if value, ok := sample(t, name, labels); ok {
			v.gauges[name] = value
		}
	}
	for _, reason := range healthReasons {
		if value, ok := sample(t, "health_check_errors_total", map[string]string{"namespace": fxNS, "cluster": cluster, "reason": reason}); ok {
			v.errors[reason] = value
		}
	}
	return v
}

// clusterRequest asks for a group snapshot of every member PVC of the test cluster named cluster.
func clusterRequest(tc *testCluster, cluster, name string) SnapshotRequest {
	ids := make([]string, len(tc.ClientURLs))
	for i := range ids {
		ids[i] = pvHandle(fxNS, cluster, i)
	}
	return SnapshotRequest{Name: name, SourceVolumeIDs: ids, Secrets: secretsOf(tc), Group: true}
}

// namedWorld is etcdWorld for a cluster name of the test's own, so no other test's health series mix in.
func namedWorld(t *testing.T, tc *testCluster, cluster string) []runtime.Object {
	t.Helper()
	return append(etcdPVCs(fxNS, cluster, len(tc.ClientURLs)), clientService(t, fxNS, cluster, tc.ClientURLs[0]))
}

// TestHealthMetricsOnlyFromCompletedChecks drives a real etcd cluster through a healthy check, TLS
// mistakes, an unreachable endpoint, an alarm and a lost quorum, and checks what /metrics says after
// each: the health gauges and their timestamp move only when a check ran to the end, and every
// failure is counted under its reason. Deleting the cluster's last snapshot removes its series.
func TestHealthMetricsOnlyFromCompletedChecks(t *testing.T) {
	const cluster = "metrics"
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, namedWorld(t, tc, cluster)...)
	otherCA, err := testpki.NewCA("metrics-other-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.Issue("metrics-foreign-client")
	if err != nil {
		t.Fatal(err)
	}

	before := float64(time.Now().Unix())
	ok, err := f.engine.Create(f.ctx, clusterRequest(tc, cluster, "metrics-healthy"))
	if err != nil {
		t.Fatal(err)
	}
	v := viewHealth(t, cluster)
	for name, want := range map[string]float64{"cluster_healthy_members": 3, "cluster_quorum": 1, "cluster_leader_present": 1} {
		if got, present := v.gauges[name]; !present || got != want {
			t.Errorf("after a healthy check %s = %v (present %v), want %v", name, got, present, want)
		}
	}
	checked := v.gauges["health_check_timestamp_seconds"]
	if checked < before || checked > float64(time.Now().Unix())+1 {
		t.Errorf("health_check_timestamp_seconds = %v, want the time of the check (>= %v)", checked, before)
	}
	for _, reason := range healthReasons {
		if got, present := v.errors[reason]; !present || got != 0 {
			t.Errorf("health_check_errors_total{reason=%q} = %v (present %v), want an exported 0 so rate() works from the first error", reason, got, present)
		}
	}

	wrongCA := clusterRequest(tc, cluster, "metrics-wrong-ca")
	wrongCA.Secrets[secretKeyCA] = string(otherCA.CertPEM())
	foreignCert := clusterRequest(tc, cluster, "metrics-foreign-cert")
	foreignCert.Secrets[secretKeyCert], foreignCert.Secrets[secretKeyKey] = string(foreign.CertPEM), string(foreign.KeyPEM)
	brokenKey := clusterRequest(tc, cluster, "metrics-key-mismatch")
	brokenKey.Secrets[secretKeyKey] = string(foreign.KeyPEM)
	unreachable := clusterRequest(tc, cluster, "metrics-unreachable")
	unreachable.Parameters = map[string]string{paramEndpoints: closedPortURL(t)}

	// Nothing of these says anything about the cluster: the gauges and the timestamp must stay.
	steps := []struct {
		name   string
		req    SnapshotRequest
		code   codes.Code
		reason string
	}{
		{"CA that did not sign the servers", wrongCA, codes.FailedPrecondition, "tls"},
		{"client certificate of another CA", foreignCert, codes.FailedPrecondition, "tls"},
		{"key not matching the certificate", brokenKey, codes.InvalidArgument, "tls"},
		{"nothing listening at the endpoint", unreachable, codes.Unavailable, "unreachable"},
	}
	for _, s := range steps {
		prior := viewHealth(t, cluster)
		_, err := f.engine.Create(f.ctx, s.req)
		if status.Code(err) != s.code {
			t.Fatalf("%s: error = %v, want %v", s.name, err, s.code)
		}
		now := viewHealth(t, cluster)
		if now.errors[s.reason] != prior.errors[s.reason]+1 {
			t.Errorf("%s: health_check_errors_total{reason=%q} went %v -> %v, want +1", s.name, s.reason, prior.errors[s.reason], now.errors[s.reason])
		}
		for name, value := range prior.gauges {
			if now.gauges[name] != value {
				t.Errorf("%s: %s changed %v -> %v, but no check completed", s.name, name, value, now.gauges[name])
			}
		}
	}

	// An alarm is a completed check: the cluster has quorum and a leader, and says why it refuses.
	req := &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: tc.memberID(1), Alarm: pb.AlarmType_NOSPACE}
	if _, err := pb.NewMaintenanceClient(tc.cli.ActiveConnection()).Alarm(f.ctx, req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the timestamp has one-second resolution in this test's checks
	prior := viewHealth(t, cluster)
	_, err = f.engine.Create(f.ctx, clusterRequest(tc, cluster, "metrics-alarm"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "NOSPACE") {
		t.Fatalf("with NOSPACE: error = %v", err)
	}
	req.Action = pb.AlarmRequest_DEACTIVATE
	if _, err := pb.NewMaintenanceClient(tc.cli.ActiveConnection()).Alarm(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	v = viewHealth(t, cluster)
	if v.errors["alarm"] != prior.errors["alarm"]+1 || v.gauges["cluster_quorum"] != 1 || v.gauges["cluster_healthy_members"] != 3 {
		t.Errorf("after the NOSPACE refusal: %+v, want alarm errors +1 and quorum 1 with 3 healthy", v)
	}
	if v.gauges["health_check_timestamp_seconds"] <= prior.gauges["health_check_timestamp_seconds"] {
		t.Errorf("health_check_timestamp_seconds did not move on a completed check: %v -> %v",
			prior.gauges["health_check_timestamp_seconds"], v.gauges["health_check_timestamp_seconds"])
	}

	// Two of three members down: a real outage, which the gauges must show.
	tc.Stop(1)
	tc.Stop(2)
	prior = viewHealth(t, cluster)
	_, err = f.engine.Create(f.ctx, clusterRequest(tc, cluster, "metrics-quorum"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("with two members down: error = %v", err)
	}
	v = viewHealth(t, cluster)
	if v.errors["quorum"] != prior.errors["quorum"]+1 || v.gauges["cluster_quorum"] != 0 || v.gauges["cluster_healthy_members"] != 1 {
		t.Errorf("after losing quorum: %+v, want quorum errors +1, quorum 0, 1 healthy member", v)
	}

	// The only snapshot of the cluster goes: so do its series.
	if err := f.engine.Delete(f.ctx, ok.ID); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		v = viewHealth(t, cluster)
		return len(v.gauges) == 0 && len(v.errors) == 0, nil
	})
	if err != nil {
		t.Fatalf("series of a cluster with no snapshot left are still exported (%v): %+v", err, v)
	}
}

// TestHealthMetricsAuth runs the check against an etcd that has auth enabled and no client
// certificate authentication, so it refuses an identity-less client: the failure is counted as auth
// and no health gauge appears.
func TestHealthMetricsAuth(t *testing.T) {
	const cluster = "metrics-auth"
	tc := startTestClusterWith(t, 3, func(cfg *embed.Config) { cfg.ClientTLSInfo.ClientCertAuth = false })
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	if _, err := tc.cli.UserAdd(ctx, "root", "metrics-root-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	f := newEngineFixture(t, namedWorld(t, tc, cluster)...)
	_, err := f.engine.Create(f.ctx, clusterRequest(tc, cluster, "metrics-auth"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "user name is empty") {
		t.Fatalf("error = %v, want FailedPrecondition quoting etcd's refusal", err)
	}
	v := viewHealth(t, cluster)
	if v.errors["auth"] != 1 {
		t.Errorf("health_check_errors_total{reason=\"auth\"} = %v, want 1", v.errors["auth"])
	}
	if len(v.gauges) != 0 {
		t.Errorf("health gauges published without a completed check: %v", v.gauges)
	}
}

// TestMetricsLint runs the linter promtool uses (`promtool check metrics`) over everything the driver
// exports once each health series exists.
func TestMetricsLint(t *testing.T) {
	observeClusterHealth("lint", "lint", &ClusterHealth{Voters: 3, HealthyVoters: 3, HasQuorum: true, LeaderID: 1}, nil)
	defer forgetClusterHealth("lint", "lint")
	problems, err := testutil.GatherAndLint(Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if _, ok := sample(t, "health_check_errors_total", map[string]string{"namespace": "lint", "reason": "tls"}); !ok {
		t.Error("health_check_errors_total not exported")
	}
}
