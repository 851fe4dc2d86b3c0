package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// promRuleTests are promtool unit tests of manifests/examples/prometheusrule.yaml over synthetic series
// (1m samples from time 0). Schedule "ok" succeeds every minute; "stuck" last succeeded at time 0;
// "flaky" failed once at 10m; "healthy" never fails; driver replica "a" found a snapshot lost at 10m.
const promRuleTests = `
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'etcd_snapshot_driver_schedule_last_success_timestamp_seconds{namespace="etcd-test",schedule="ok"}'
        values: '0+60x120'
      - series: 'etcd_snapshot_driver_schedule_interval_seconds{namespace="etcd-test",schedule="ok"}'
        values: '60+0x120'
      - series: 'etcd_snapshot_driver_schedule_last_success_timestamp_seconds{namespace="etcd-test",schedule="stuck"}'
        values: '0+0x120'
      - series: 'etcd_snapshot_driver_schedule_interval_seconds{namespace="etcd-test",schedule="stuck"}'
        values: '60+0x120'
    alert_rule_test:
      # Two intervals (2m) plus "for: 5m": silent at 6m, firing from 7m on, never for "ok".
      - eval_time: 6m
        alertname: EtcdSnapshotStale
        exp_alerts: []
      - eval_time: 10m
        alertname: EtcdSnapshotStale
        exp_alerts:
          - exp_labels: {severity: critical, namespace: etcd-test, schedule: stuck}
            exp_annotations:
              summary: etcd backups of etcd-test/stuck are stale
              description: >-
                The newest ready snapshot of EtcdSnapshotSchedule etcd-test/stuck is 10m 0s old, more than
                two intervals. See kubectl describe etcdsnapshotschedule -n etcd-test stuck.
  - interval: 1m
    input_series:
      - series: 'etcd_snapshot_driver_schedule_runs_total{namespace="etcd-test",schedule="flaky",result="failure"}'
        values: '0x9 1+0x120'
      - series: 'etcd_snapshot_driver_schedule_runs_total{namespace="etcd-test",schedule="flaky",result="success"}'
        values: '0+1x130'
      - series: 'etcd_snapshot_driver_schedule_runs_total{namespace="etcd-test",schedule="healthy",result="failure"}'
        values: '0+0x130'
      - series: 'etcd_snapshot_driver_schedule_runs_total{namespace="etcd-test",schedule="healthy",result="success"}'
        values: '0+1x130'
    alert_rule_test:
      - eval_time: 5m
        alertname: EtcdSnapshotFailing
        exp_alerts: []
      - eval_time: 30m
        alertname: EtcdSnapshotFailing
        exp_alerts:
          - exp_labels: {severity: warning, namespace: etcd-test, schedule: flaky, result: failure}
            exp_annotations:
              summary: scheduled etcd snapshots of etcd-test/flaky fail
              description: >-
                1 run(s) of EtcdSnapshotSchedule etcd-test/flaky failed in the last hour. The SnapshotFailed
                events on the schedule carry the reason.
      # An hour after the failure the alert resolves.
      - eval_time: 75m
        alertname: EtcdSnapshotFailing
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'etcd_snapshot_driver_snapshots_lost_total{job="etcd-snapshot-driver",instance="a"}'
        values: '0x9 1+0x120'
      - series: 'etcd_snapshot_driver_snapshots_lost_total{job="etcd-snapshot-driver",instance="b"}'
        values: '0+0x130'
    alert_rule_test:
      - eval_time: 5m
        alertname: EtcdSnapshotLost
        exp_alerts: []
      - eval_time: 30m
        alertname: EtcdSnapshotLost
        exp_alerts:
          - exp_labels: {severity: critical, job: etcd-snapshot-driver, instance: a}
            exp_annotations:
              summary: etcd snapshots were lost
              description: >-
                1 ready etcd snapshot(s) lost their volume in the last hour and can no longer be restored.
                The driver logs each one ("is lost", with what is gone); its record says phase Lost.
      - eval_time: 75m
        alertname: EtcdSnapshotLost
        exp_alerts: []
`

// TestPrometheusRuleWithPromtool checks the example PrometheusRule with the real promtool (built from
// tools/upstream with the rig's other binaries): its rule groups pass `promtool check rules`, and
// `promtool test rules` shows each alert firing when it should and silent otherwise. No rig is started.
func TestPrometheusRuleWithPromtool(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the upstream binaries (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bin, err := rig.EnsureUpstream(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	root, err := rig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "manifests", "examples", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule unstructured.Unstructured
	if err := yaml.UnmarshalStrict(data, &rule.Object); err != nil {
		t.Fatal(err)
	}
	if rule.GetKind() != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml holds a %s", rule.GetKind())
	}
	groups, ok, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	if !ok || len(groups) == 0 {
		t.Fatal("prometheusrule.yaml has no spec.groups")
	}
	rules, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tests.yaml"), []byte(promRuleTests), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, alert := range []string{"EtcdSnapshotStale", "EtcdSnapshotFailing", "EtcdSnapshotLost"} {
		if !bytes.Contains(rules, []byte("alert: "+alert)) {
			t.Errorf("no alert %s in the rule groups", alert)
		}
	}

	promtool := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "promtool"), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := promtool("check", "rules", "rules.yaml")
	t.Logf("promtool check rules:\n%s", out)
	if !strings.Contains(out, "SUCCESS: 3 rules found") {
		t.Errorf("promtool check rules found not exactly the three alerts:\n%s", out)
	}
	t.Logf("promtool test rules:\n%s", promtool("test", "rules", "tests.yaml"))
}
