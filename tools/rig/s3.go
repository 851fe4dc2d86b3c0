package rig

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// S3Region is the region versitygw serves (its default); clients that name it skip a location lookup.
const S3Region = "us-east-1"

// s3ReadyTimeout bounds the wait for versitygw to answer after a start or restart.
const s3ReadyTimeout = time.Minute

// S3Options configures StartS3.
type S3Options struct {
	// CA issues the server's certificate for 127.0.0.1 and localhost. Required.
	CA *testpki.CA
	// BinDir holds versitygw; empty means the upstream binaries (EnsureUpstream, built if missing).
	BinDir string
	// LogPath receives the server's output; empty means <dir>/versitygw.log.
	LogPath string
	// Progress receives build progress and a line when the server is ready; nil discards them.
	Progress io.Writer
}

// S3 is a running S3-compatible object store: versitygw with its POSIX backend on loopback with TLS,
// versioning on (Object Lock needs it), one root account and no IAM users.
type S3 struct {
	// Endpoint is the server's URL, https://127.0.0.1:<port>; the port stays the same across Restart.
	Endpoint string
	// AccessKey and SecretKey are the root account's credentials, random per StartS3.
	AccessKey, SecretKey string
	// CAPEM is the certificate of the CA that issued the serving certificate.
	CAPEM []byte

	proc     *process
	progress io.Writer
}

// StartS3 starts versitygw storing buckets under <dir>/buckets and object versions under
// <dir>/versions (dir's filesystem needs user extended attributes, which hold versitygw's metadata)
// and waits until it answers an authenticated request. Stop it with Stop.
func StartS3(ctx context.Context, dir string, opts S3Options) (*S3, error) {
	if opts.CA == nil {
		return nil, errors.New("rig: StartS3 needs a CA for the serving certificate")
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = EnsureUpstream(ctx, progress); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("rig: s3: %w", err)
	}
	buckets, versions, tlsDir := filepath.Join(dir, "buckets"), filepath.Join(dir, "versions"), filepath.Join(dir, "tls")
	for _, d := range []string{buckets, versions, tlsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("rig: s3: %w", err)
		}
	}
	certFile, keyFile := filepath.Join(tlsDir, "s3.crt"), filepath.Join(tlsDir, "s3.key")
	kp, err := opts.CA.Issue("rig-s3", "127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	if err := kp.WriteFiles(certFile, keyFile); err != nil {
		return nil, err
	}
	// A stable port, so that the server can listen on it again after Stop (see stablePort).
	port, err := stablePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logPath := opts.LogPath
	if logPath == "" {
		logPath = filepath.Join(dir, "versitygw.log")
	}
	envBin, err := exec.LookPath("env")
	if err != nil {
		return nil, fmt.Errorf("rig: s3: %w", err)
	}
	s := &S3{
		Endpoint:  "https://" + addr,
		AccessKey: randomHex(10),
		SecretKey: randomHex(20),
		CAPEM:     opts.CA.CertPEM(),
		progress:  progress,
	}
	// env -u removes variables (the process runs with the rig's environment plus its own): these
	// machines set AWS_CA_BUNDLE, which AWS SDK code refuses to start with unless it is usable, and an
	// inherited ROOT_ACCESS_KEY_ID or ROOT_SECRET_ACCESS_KEY would take precedence over the keys below.
	// The keys go in the environment, not the arguments, so the log's command line does not show them.
	s.proc = &process{
		name: "versitygw",
		path: envBin,
		args: []string{
			"-u", "AWS_CA_BUNDLE", "-u", "ROOT_ACCESS_KEY_ID", "-u", "ROOT_SECRET_ACCESS_KEY",
			filepath.Join(binDir, "versitygw"),
			"--port", addr,
			"--cert", certFile,
			"--key", keyFile,
			"--region", S3Region,
			"posix",
			// Versioning is off without a versioning directory, and with it Object Lock: a bucket created
			// with Object Lock then gets versioning enabled, as S3 requires.
			"--versioning-dir", versions,
			buckets,
		},
		env:     []string{"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey},
		logPath: logPath,
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// S3ForTest starts an S3 server for t in a temporary directory (StartS3 with opts; a new CA when
// opts.CA is nil; build progress to stderr), stopped when t ends; when t fails, the end of the
// server's log is logged. It is skipped with -short.
func S3ForTest(t testing.TB, ctx context.Context, opts S3Options) *S3 {
	t.Helper()
	if testing.Short() {
		t.Skip("rig: end-to-end test skipped with -short")
	}
	if opts.CA == nil {
		ca, err := testpki.NewCA("rig-s3-ca")
		if err != nil {
			t.Fatal(err)
		}
		opts.CA = ca
	}
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	s, err := StartS3(ctx, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("rig: last lines of %s:\n%s", s.LogPath(), logTail(s.LogPath(), 40))
		}
	})
	return s
}

// Stop ends the server (SIGTERM, SIGKILL after a grace period); its data stays for Restart. Safe to
// call repeatedly.
func (s *S3) Stop() { s.proc.stop(stopGrace) }

// Restart starts the stopped server again on the same port, with the same keys and data, and waits
// until it answers.
func (s *S3) Restart(ctx context.Context) error { return s.start(ctx) }

// Running reports whether the server process is alive.
func (s *S3) Running() bool {
	alive, _ := s.proc.running()
	return alive
}

// LogPath is the file receiving the server's output.
func (s *S3) LogPath() string { return s.proc.logPath }

func (s *S3) start(ctx context.Context) error {
	if err := s.proc.start(); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		s.proc.stop(stopGrace)
		return err
	}
	fmt.Fprintf(s.progress, "rig: S3 server (versitygw) ready at %s\n", s.Endpoint)
	return nil
}

// waitReady polls ListBuckets, which needs TLS, the root keys and the backend to work.
func (s *S3) waitReady(ctx context.Context) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s3ReadyTimeout)
	defer cancel()
	var last error
	for {
		if alive, exit := s.proc.running(); !alive {
			return fmt.Errorf("rig: versitygw exited during start-up (%v)\n--- last lines of %s ---\n%s", exit, s.proc.logPath, s.proc.logTail())
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, last = client.ListBuckets(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rig: versitygw not ready after %s: %v\n--- last lines of %s ---\n%s", s3ReadyTimeout, last, s.proc.logPath, s.proc.logTail())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Client returns a minio-go client for the server as the root account, trusting only CAPEM, with
// trailing headers on (minio-go needs them to send checksums).
func (s *S3) Client() (*minio.Client, error) {
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("rig: s3 endpoint: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		return nil, errors.New("rig: s3: no certificate in CAPEM")
	}
	transport, err := minio.DefaultTransport(true)
	if err != nil {
		return nil, fmt.Errorf("rig: s3 transport: %w", err)
	}
	transport.TLSClientConfig.RootCAs = pool
	transport.Proxy = nil // loopback
	client, err := minio.New(u.Host, &minio.Options{
		Creds:           credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:          true,
		Transport:       transport,
		Region:          S3Region,
		BucketLookup:    minio.BucketLookupPath,
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("rig: s3 client: %w", err)
	}
	return client, nil
}

// CreateBucket creates a bucket through the S3 API (a directory made by hand under <dir>/buckets lacks
// versitygw's attributes and every request on it fails). With objectLock the bucket has Object Lock
// enabled, and therefore versioning.
func (s *S3) CreateBucket(ctx context.Context, name string, objectLock bool) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	if err := client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: S3Region, ObjectLocking: objectLock}); err != nil {
		return fmt.Errorf("rig: create bucket %s: %w", name, err)
	}
	return nil
}
