package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// result is what the playground learned about its snapshot.
type result struct {
	name          string
	wrote         int   // sample keys written
	wroteRevision int64 // etcd revision of the last sample write
	vgs           *groupsnapshotv1.VolumeGroupSnapshot
	rec           *driver.Record
	file          string // host path of the snapshot file
	took          time.Duration
}

func (res *result) readyToUse() bool {
	return res.vgs != nil && res.vgs.Status != nil && res.vgs.Status.ReadyToUse != nil && *res.vgs.Status.ReadyToUse
}

// verify returns why the snapshot is not ready and verified, or nil: readyToUse, the record Ready with
// a sha256 and a key count, at least the keys written at or after their revision, and the file on
// the volume being the one the record describes.
func (res *result) verify() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if !res.readyToUse() {
		add("VolumeGroupSnapshot %s is not readyToUse", res.name)
	}
	rec := res.rec
	switch {
	case rec == nil:
		add("no driver record found for it")
	case rec.Phase != driver.PhaseReady:
		add("record %s is in phase %s, want %s%s", rec.ID, rec.Phase, driver.PhaseReady, errorSuffix(rec))
	default:
		if rec.SourceMember == nil {
			add("record %s names no source member", rec.ID)
		}
		if rec.SHA256 == "" {
			add("record %s has no sha256", rec.ID)
		}
		if rec.Keys == 0 {
			add("record %s has no key count", rec.ID)
		} else if rec.Keys < int64(res.wrote) {
			add("snapshot holds %d keys, fewer than the %d written", rec.Keys, res.wrote)
		}
		if rec.Revision < res.wroteRevision {
			add("snapshot revision %d is older than revision %d of the sample keys", rec.Revision, res.wroteRevision)
		}
		if res.file == "" {
			add("no snapshot file located for record %s", rec.ID)
		} else if _, err := rig.CheckSnapshotFile(res.file, rec); err != nil {
			add("%v", err)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("snapshot not verified:\n  - %s", strings.Join(problems, "\n  - "))
}

func errorSuffix(rec *driver.Record) string {
	if rec.Error == "" {
		return ""
	}
	return fmt.Sprintf(" (%s: %s)", rec.ErrorCode, rec.Error)
}

// printTable prints the one-row summary; fields not known (yet) show as "-".
func printTable(w io.Writer, res *result) {
	member, revision, keys, size := "-", "-", "-", "-"
	if rec := res.rec; rec != nil {
		if rec.SourceMember != nil {
			member = rec.SourceMember.Name
		}
		if rec.Phase == driver.PhaseReady {
			revision, keys, size = fmt.Sprint(rec.Revision), fmt.Sprint(rec.Keys), humanBytes(rec.SizeBytes)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "VOLUMEGROUPSNAPSHOT\tREADYTOUSE\tMEMBER\tREVISION\tKEYS\tSIZE\tTIME")
	fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\t%s\n", res.name, res.readyToUse(), member, revision, keys, size, res.took.Round(100*time.Millisecond))
	tw.Flush()
	fmt.Fprintln(w)
}

// printVerified says what was checked and where the snapshot and its record are.
func printVerified(w io.Writer, res *result) {
	rec := res.rec
	role := "follower"
	if rec.SourceMember.Leader {
		role = "leader"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "verified\tsha256 %s…, %d keys at revision %d: includes the %d sample keys (written at revision %d)\n",
		rec.SHA256[:min(16, len(rec.SHA256))], rec.Keys, rec.Revision, res.wrote, res.wroteRevision)
	fmt.Fprintf(tw, "taken from\tmember %s (the %s) at %s, by etcdctl snapshot save in a Job\n",
		rec.SourceMember.Name, role, rec.SourceMember.Endpoint)
	fmt.Fprintf(tw, "file\t%s\n", res.file)
	fmt.Fprintf(tw, "record\tConfigMap %s/%s, key %s\n", rig.DriverNamespace, rec.ID, rig.RecordKey)
	tw.Flush()
}

// printLookAround prints how to reach the running rig with the kubectl it built.
func printLookAround(w io.Writer, r *rig.Rig, res *result) {
	kubectl := filepath.Join(r.BinDir, "kubectl")
	fmt.Fprintf(w, "\nThe rig is up. Look around with %s:\n\n", kubectlVersion(r))
	fmt.Fprintf(w, "  export KUBECONFIG=%s\n", r.Kubeconfig)
	for _, args := range []string{
		"get volumegroupsnapshots -n " + r.Namespace,
		"get volumesnapshots -n " + r.Namespace,
		"get jobs,pvc -n " + r.Namespace,
		"get configmaps -n " + rig.DriverNamespace + " -l " + rig.ManagedByLabel + "=" + rig.ManagedByValue,
		"get configmap " + res.rec.ID + " -n " + rig.DriverNamespace + ` -o jsonpath='{.data.record\.json}'`,
	} {
		fmt.Fprintf(w, "  %s %s\n", kubectl, args)
	}
	if class, err := r.GroupSnapshotClassName(); err == nil {
		fmt.Fprintf(w, "\nTake a snapshot every minute, keeping the newest three (manifests/README.md):\n\n")
		fmt.Fprintf(w, "  %s apply -f - <<'EOF'\n%sEOF\n", kubectl, exampleSchedule(r.Namespace, rig.EtcdClusterName, class))
		fmt.Fprintf(w, "  %s get etcdsnapshotschedules,volumegroupsnapshots -n %s\n", kubectl, r.Namespace)
	}
	fmt.Fprintf(w, "\nComponent logs: %s\nPress Ctrl-C to stop the rig.\n", r.Logs())
}

// exampleSchedule is a ready-made EtcdSnapshotSchedule of the rig's cluster for the playground's user.
func exampleSchedule(namespace, cluster, class string) string {
	return fmt.Sprintf(`apiVersion: snapshot.etcd.io/v1alpha1
kind: EtcdSnapshotSchedule
metadata:
  name: every-minute
  namespace: %s
spec:
  schedule: "@every 1m"
  source:
    cluster: %s
  volumeGroupSnapshotClassName: %s
  retention:
    keep: 3
`, namespace, cluster, class)
}

// kubectlVersion names the rig's kubectl by the Kubernetes version stamped into it at build time
// (the pinned k8s.io/kubernetes module of tools/upstream).
func kubectlVersion(r *rig.Rig) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(r.BinDir, "kubectl"), "version", "--client", "-o", "json")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.Kubeconfig)
	out, err := cmd.Output()
	var v struct {
		ClientVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"clientVersion"`
	}
	if err == nil {
		err = json.Unmarshal(out, &v)
	}
	if err != nil || v.ClientVersion.GitVersion == "" {
		return fmt.Sprintf("kubectl (its version did not print: %v)", err)
	}
	return "kubectl built from k8s.io/kubernetes " + v.ClientVersion.GitVersion
}

// humanBytes formats a size with binary units, as in "1.2 MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
