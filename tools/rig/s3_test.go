package rig_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestS3Server proves the rig's S3 server does what off-site copies need: buckets with and without
// Object Lock, a streamed multipart upload with a CRC64NVME full-object checksum read back byte for
// byte, aborted uploads leaving nothing listed, governance retention refusing a plain delete of the
// locked version, and Stop/Restart keeping the data.
func TestS3Server(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// As on the machines these tests run on; a stale root key would override the server's own.
	t.Setenv("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
	t.Setenv("ROOT_ACCESS_KEY_ID", "stale")
	s := rig.S3ForTest(t, ctx, rig.S3Options{})
	if !strings.HasPrefix(s.Endpoint, "https://127.0.0.1:") || s.AccessKey == "" || s.SecretKey == "" || len(s.CAPEM) == 0 {
		t.Fatalf("S3 handle = %q, access key %q, CA %d bytes", s.Endpoint, s.AccessKey, len(s.CAPEM))
	}
	client, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	const plain, locked = "plain", "locked"
	if err := s.CreateBucket(ctx, plain, false); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBucket(ctx, locked, true); err != nil {
		t.Fatal(err)
	}

	t.Run("Environment", func(t *testing.T) {
		env := serverEnviron(t, s)
		for _, name := range []string{"AWS_CA_BUNDLE", "ROOT_ACCESS_KEY_ID"} {
			if v, ok := env[name]; ok {
				t.Errorf("versitygw runs with %s=%s, want it unset", name, v)
			}
		}
		if env["ROOT_ACCESS_KEY"] != s.AccessKey {
			t.Errorf("versitygw runs with ROOT_ACCESS_KEY=%q, want the handle's %q", env["ROOT_ACCESS_KEY"], s.AccessKey)
		}
	})

	t.Run("Buckets", func(t *testing.T) {
		list, err := client.ListBuckets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, b := range list {
			names = append(names, b.Name)
		}
		if strings.Join(names, ",") != "locked,plain" {
			t.Fatalf("buckets = %v, want [locked plain]", names)
		}
		enabled, _, _, _, err := client.GetObjectLockConfig(ctx, locked)
		if err != nil || enabled != "Enabled" {
			t.Fatalf("Object Lock of %s = %q, %v; want Enabled", locked, enabled, err)
		}
		v, err := client.GetBucketVersioning(ctx, locked)
		if err != nil || !v.Enabled() {
			t.Fatalf("versioning of %s = %+v, %v; want Enabled", locked, v, err)
		}
		if _, _, _, _, err := client.GetObjectLockConfig(ctx, plain); err == nil {
			t.Fatalf("Object Lock configuration of %s found, want none", plain)
		}
	})

	// Four parts of 5 MiB (S3's minimum part size) and a short last one, streamed with an unknown
	// length as the upload step will do.
	const partSize = 5 << 20
	data := make([]byte, 4*partSize+12345)
	rand.Read(data)
	t.Run("MultipartCRC64NVME", func(t *testing.T) {
		info, err := client.PutObject(ctx, plain, "multi", bytes.NewReader(data), -1, minio.PutObjectOptions{
			PartSize: partSize,
			Checksum: minio.ChecksumCRC64NVME,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(info.ETag, "-5") {
			t.Errorf("ETag %q, want a multipart ETag of 5 parts", info.ETag)
		}
		h := minio.ChecksumCRC64NVME.Hasher()
		h.Write(data)
		want := base64.StdEncoding.EncodeToString(h.Sum(nil))
		st, err := client.StatObject(ctx, plain, "multi", minio.StatObjectOptions{Checksum: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.ChecksumCRC64NVME != want || st.ChecksumMode != "FULL_OBJECT" {
			t.Errorf("stored checksum %q (%s), want CRC64NVME %q (FULL_OBJECT)", st.ChecksumCRC64NVME, st.ChecksumMode, want)
		}
		checkObject(t, ctx, client, plain, "multi", data)
	})

	t.Run("AbortMultipart", func(t *testing.T) {
		core := &minio.Core{Client: client}
		id, err := core.NewMultipartUpload(ctx, plain, "aborted", minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := core.PutObjectPart(ctx, plain, "aborted", id, 1, bytes.NewReader(data[:partSize]), partSize, minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := incompleteUploads(t, ctx, core, plain); len(got) != 1 || got[0] != id {
			t.Fatalf("incomplete uploads before abort = %v, want [%s]", got, id)
		}
		if err := core.AbortMultipartUpload(ctx, plain, "aborted", id); err != nil {
			t.Fatal(err)
		}
		if got := incompleteUploads(t, ctx, core, plain); len(got) != 0 {
			t.Fatalf("incomplete uploads after abort = %v, want none", got)
		}
		if _, err := client.StatObject(ctx, plain, "aborted", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != minio.NoSuchKey {
			t.Fatalf("stat of the aborted object: %v, want NoSuchKey", err)
		}
	})

	t.Run("GovernanceRetention", func(t *testing.T) {
		until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		body := []byte("held by governance retention")
		info, err := client.PutObject(ctx, locked, "held", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{
			Mode:            minio.Governance,
			RetainUntilDate: until,
			SendContentMd5:  true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if info.VersionID == "" {
			t.Fatal("no version id for an object in a versioned bucket")
		}
		// The retention is read from HEAD's headers: versitygw v1.8.0 answers GetObjectRetention with
		// the root element <ObjectLockRetention> instead of S3's <Retention>, which minio-go refuses.
		st, err := client.StatObject(ctx, locked, "held", minio.StatObjectOptions{VersionID: info.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		mode, retainUntil := st.Metadata.Get("X-Amz-Object-Lock-Mode"), st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date")
		if got, err := time.Parse(time.RFC3339, retainUntil); mode != string(minio.Governance) || err != nil || !got.Equal(until) {
			t.Fatalf("retention = %q until %q, want GOVERNANCE until %s", mode, retainUntil, until.Format(time.RFC3339))
		}
		err = client.RemoveObject(ctx, locked, "held", minio.RemoveObjectOptions{VersionID: info.VersionID})
		if code := minio.ToErrorResponse(err).Code; code != minio.AccessDenied {
			t.Fatalf("delete of the retained version: %v (code %q), want AccessDenied", err, code)
		}
		checkVersion(t, ctx, client, locked, "held", info.VersionID, body)
	})

	t.Run("StopRestart", func(t *testing.T) {
		s.Stop()
		if s.Running() {
			t.Fatal("versitygw still running after Stop")
		}
		// minio-go retries a refused connection until the context ends.
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := client.ListBuckets(sctx)
		scancel()
		if err == nil {
			t.Fatal("ListBuckets answered while the server was stopped")
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		checkObject(t, ctx, client, plain, "multi", data)
	})
}

func checkObject(t *testing.T, ctx context.Context, client *minio.Client, bucket, key string, want []byte) {
	t.Helper()
	checkVersion(t, ctx, client, bucket, key, "", want)
}

// checkVersion reads one version of an object (the current one for "") and compares it with want.
func checkVersion(t *testing.T, ctx context.Context, client *minio.Client, bucket, key, version string, want []byte) {
	t.Helper()
	obj, err := client.GetObject(ctx, bucket, key, minio.GetObjectOptions{VersionID: version})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %s/%s: %v", bucket, key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s/%s read back %d bytes that differ from the %d written", bucket, key, len(got), len(want))
	}
}

// incompleteUploads lists the bucket's multipart uploads both ways a client can (ListMultipartUploads
// and minio-go's ListIncompleteUploads) and fails t when they disagree.
func incompleteUploads(t *testing.T, ctx context.Context, core *minio.Core, bucket string) []string {
	t.Helper()
	res, err := core.ListMultipartUploads(ctx, bucket, "", "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var listed, incomplete []string
	for _, u := range res.Uploads {
		listed = append(listed, u.UploadID)
	}
	for u := range core.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			t.Fatal(errors.Join(errors.New("ListIncompleteUploads"), u.Err))
		}
		incomplete = append(incomplete, u.UploadID)
	}
	if strings.Join(listed, ",") != strings.Join(incomplete, ",") {
		t.Fatalf("ListMultipartUploads = %v, ListIncompleteUploads = %v", listed, incomplete)
	}
	return listed
}

// serverEnviron is the environment of the running versitygw, found by its listen address.
func serverEnviron(t *testing.T, s *rig.S3) map[string]string {
	t.Helper()
	addr := strings.TrimPrefix(s.Endpoint, "https://")
	procs := rig.ProcessesMentioning("versitygw\x00--port\x00" + addr)
	if len(procs) != 1 {
		t.Fatalf("processes serving %s: %v, want one", addr, procs)
	}
	pid, _, _ := strings.Cut(procs[0], ":")
	data, err := os.ReadFile(filepath.Join("/proc", pid, "environ"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(data), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
