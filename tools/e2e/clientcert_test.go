package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EExpiredClientCertificate gives the driver, through its class's credentials Secret, a client
// certificate of the cluster's own CA that expired ten minutes ago. etcd itself refuses it (etcdctl
// with the same files), and the VolumeGroupSnapshot shows a FailedPrecondition or InvalidArgument error
// saying the certificate expired and when; the driver creates no Job, PVC, Secret or record.
func TestE2EExpiredClientCertificate(t *testing.T) {
	r, ctx := setup(t)
	ca, _, _ := r.Etcd.Creds()
	notAfter := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	cert, key, err := r.Etcd.IssueClientCert("e2e-expired-client", notAfter.Add(-40*time.Minute), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(cert)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	// The refusal is etcd's rule: etcdctl with these files fails, and with a certificate of the same CA
	// that differs only in its dates it succeeds.
	ok, okKey, err := r.Etcd.IssueClientCert("e2e-valid-client", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.crt": ca, "tls.crt": cert, "tls.key": key}
	if out, err := etcdctlHealth(ctx, t, r, ca, ok, okKey); err != nil {
		t.Fatalf("etcdctl endpoint health with a valid certificate of the same CA: %v\n%s", err, out)
	}
	out, err := etcdctlHealth(ctx, t, r, ca, cert, key)
	if err == nil {
		t.Fatalf("etcdctl endpoint health with the expired certificate succeeded:\n%s", out)
	}
	t.Logf("etcdctl with the expired certificate: %v", err)

	secretName := uniqueName("e2e-expired-client-tls")
	secrets := r.Kube.CoreV1().Secrets(r.Namespace)
	if _, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName},
		Type:       corev1.SecretTypeOpaque,
		Data:       files,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, "Secret", secretName, secrets.Delete)
	class := createGroupClass(t, ctx, r, uniqueName("e2e-expired-cert"), map[string]string{
		"csi.storage.k8s.io/group-snapshotter-secret-name":      secretName,
		"csi.storage.k8s.io/group-snapshotter-secret-namespace": r.Namespace,
	})

	created := watchManagedObjects(t, ctx, r)
	name := uniqueName("e2e-expired-cert")
	vgs := createGroupWithClass(t, ctx, r, name, class)

	vgsErr, contentErr, err := waitGroupError(ctx, r, vgs, func(msg string) bool { return strings.Contains(msg, "expired") })
	if err != nil {
		t.Fatalf("no error saying the certificate expired on VolumeGroupSnapshot %s (status.error %q; content status.error %q): %v", name, vgsErr, contentErr, err)
	}
	t.Logf("VolumeGroupSnapshot status.error: %q; content status.error: %q", vgsErr, contentErr)
	msg := vgsErr
	if !strings.Contains(msg, "expired") {
		msg = contentErr
	}
	if !strings.Contains(msg, "code = FailedPrecondition") && !strings.Contains(msg, "code = InvalidArgument") {
		t.Errorf("error is neither FailedPrecondition nor InvalidArgument: %s", msg)
	}
	for _, want := range []string{"expired", notAfter.UTC().Format(time.RFC3339), leaf.Subject.String()} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, strings.TrimSpace(string(cert))) {
		t.Errorf("error carries credentials: %s", msg)
	}
	if got := created(); len(got) > 0 {
		t.Errorf("the driver created objects for an expired certificate: %s", strings.Join(got, ", "))
	}
	deleteGroup(t, ctx, r, name)
	if got := created(); len(got) > 0 {
		t.Errorf("objects created before the VolumeGroupSnapshot was gone: %s", strings.Join(got, ", "))
	}
}

// etcdctlHealth runs `etcdctl endpoint health` against member 0 with the given credentials.
func etcdctlHealth(ctx context.Context, t *testing.T, r *rig.Rig, ca, cert, key []byte) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"ca.crt": ca, "tls.crt": cert, "tls.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return exec.CommandContext(ctx, filepath.Join(r.BinDir, "etcdctl"), "endpoint", "health",
		"--endpoints="+r.Etcd.ClientURLs()[0], "--dial-timeout=3s", "--command-timeout=5s",
		"--cacert="+filepath.Join(dir, "ca.crt"), "--cert="+filepath.Join(dir, "tls.crt"), "--key="+filepath.Join(dir, "tls.key")).CombinedOutput()
}

// createGroupClass creates a VolumeGroupSnapshotClass of the driver with the given parameters
// (deletion policy Delete) and registers its deletion.
func createGroupClass(t *testing.T, ctx context.Context, r *rig.Rig, name string, params map[string]string) string {
	t.Helper()
	classes := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses()
	if _, err := classes.Create(ctx, &groupsnapshotv1.VolumeGroupSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: name},
		Driver:         r.DriverName,
		DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
		Parameters:     params,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, "VolumeGroupSnapshotClass", name, classes.Delete)
	return name
}

// createGroupWithClass creates a dynamic VolumeGroupSnapshot of the cluster under test with class and
// registers its clean-up (deleteGroup).
func createGroupWithClass(t *testing.T, ctx context.Context, r *rig.Rig, name, class string) *groupsnapshotv1.VolumeGroupSnapshot {
	t.Helper()
	vgs, err := r.CreateGroupSnapshotWithClass(ctx, name, class)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteGroup(t, cleanupContext(t), r, name) })
	return vgs
}

// waitGroupError waits until the status.error of vgs or of its content has a message match accepts,
// and returns both messages as last seen; its error names the content it read.
func waitGroupError(ctx context.Context, r *rig.Rig, vgs *groupsnapshotv1.VolumeGroupSnapshot, match func(string) bool) (vgsErr, contentErr string, err error) {
	content := "groupsnapcontent-" + string(vgs.UID)
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		v, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(vgs.Namespace).Get(ctx, vgs.Name, metav1.GetOptions{})
		if err == nil && v.Status != nil && v.Status.Error != nil {
			vgsErr = ptr.Deref(v.Status.Error.Message, "")
			if v.Status.BoundVolumeGroupSnapshotContentName != nil {
				content = *v.Status.BoundVolumeGroupSnapshotContentName
			}
		}
		c, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, content, metav1.GetOptions{})
		if err == nil && c.Status != nil && c.Status.Error != nil {
			contentErr = ptr.Deref(c.Status.Error.Message, "")
		}
		return match(vgsErr) || match(contentErr), nil
	})
	if err != nil {
		err = fmt.Errorf("VolumeGroupSnapshot %s, content %s: %w", vgs.Name, content, err)
	}
	return vgsErr, contentErr, err
}
