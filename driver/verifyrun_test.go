package driver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunVerifyWritesTerminationLog runs the subcommand on a good and a damaged snapshot.
func TestRunVerifyWritesTerminationLog(t *testing.T) {
	good := snapshotFixture(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "flipped.db")
	if err := os.WriteFile(bad, flipBit(data, 3*len(data)/4), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		file     string
		wantCode int
		// check inspects stdout, stderr and the termination log.
		check func(t *testing.T, stdout, stderr, termLog string)
	}{
		{
			name: "good snapshot", file: good, wantCode: 0,
			check: func(t *testing.T, stdout, stderr, termLog string) {
				var res VerifyResult
				if err := json.Unmarshal([]byte(termLog), &res); err != nil {
					t.Fatalf("termination log %q is not the result JSON: %v", termLog, err)
				}
				if res.File != good || !res.HashChecked || res.Keys != 20 || res.Revision != 21 {
					t.Errorf("result %+v, want file %s, hash checked, 20 keys at revision 21", res, good)
				}
				if strings.TrimSpace(stdout) != termLog {
					t.Errorf("stdout %q differs from termination log %q", stdout, termLog)
				}
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
			},
		},
		{
			name: "bit-flipped snapshot", file: bad, wantCode: 1,
			check: func(t *testing.T, stdout, stderr, termLog string) {
				if !strings.HasPrefix(termLog, "snapshot "+bad+": sha256 mismatch") || strings.Contains(termLog, "\n") {
					t.Errorf("termination log %q, want one line naming the file and the sha256 mismatch", termLog)
				}
				if strings.TrimSpace(stderr) != termLog {
					t.Errorf("stderr %q differs from termination log %q", stderr, termLog)
				}
				if stdout != "" {
					t.Errorf("stdout = %q, want nothing", stdout)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			termLog := filepath.Join(t.TempDir(), "termination-log")
			var stdout, stderr bytes.Buffer
			code := RunVerify(VerifyOptions{File: tc.file, TerminationLog: termLog}, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, tc.wantCode, stderr.String())
			}
			logged, err := os.ReadFile(termLog)
			if err != nil {
				t.Fatalf("termination log: %v", err)
			}
			tc.check(t, stdout.String(), stderr.String(), string(logged))
		})
	}
}

// crashChildEnv names the damaged file when the test binary runs as the verify child process.
const crashChildEnv = "ETCD_SNAPSHOT_DRIVER_VERIFY_CRASH_FILE"

// TestRunVerifyReportsCrashOnCorruptPage zeroes a page of a real snapshot behind a valid trailer: bbolt
// may panic on it in a goroutine of its own, which kills the process, so the verify run happens in a
// child process and the test checks the termination log it leaves.
func TestRunVerifyReportsCrashOnCorruptPage(t *testing.T) {
	if file := os.Getenv(crashChildEnv); file != "" {
		os.Exit(RunVerify(VerifyOptions{File: file, TerminationLog: file + ".log"}, io.Discard, io.Discard))
	}
	good := snapshotFixture(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "zeroed-page.db")
	if err := os.WriteFile(bad, withTrailer(zeroKeyRootPage(t, good, data)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunVerifyReportsCrashOnCorruptPage$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+bad)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("verify child: err %v, want a failing exit; output:\n%s", err, out)
	}
	logged, err := os.ReadFile(bad + ".log")
	if err != nil {
		t.Fatal(err)
	}
	// The page walk before bbolt (verifybolt.go) finds the zeroed page; without it bbolt hit the page
	// in its consistency check or in its unrecoverable freelist walk goroutine. The first line names
	// the file and the page either way.
	first, _, _ := strings.Cut(string(logged), "\n")
	if !strings.HasPrefix(first, "snapshot "+bad+": ") || !(strings.Contains(first, "bbolt database corrupt: page ") ||
		strings.Contains(first, "Page expected") && (strings.Contains(first, "verify crashed while reading the database: panic: ") || strings.Contains(first, "bbolt consistency check found"))) {
		t.Errorf("termination log starts %q, want the file name and the damaged page", first)
	}
}

// TestRunVerifyChecksRecordedSHA256 checks -sha256 against a real snapshot: the recorded digest
// passes, another digest is refused naming both, and a malformed one is a usage error.
func TestRunVerifyChecksRecordedSHA256(t *testing.T) {
	good := snapshotFixture(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	// A second real snapshot with a valid trailer: a file replaced at rest passes every check but this one.
	other := snapshotFixture(t)
	otherData, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	otherSum := sha256.Sum256(otherData)
	otherDigest := hex.EncodeToString(otherSum[:])
	if otherDigest == digest {
		t.Fatal("the two fixtures are byte-identical; the replaced-file case would prove nothing")
	}
	flipped := filepath.Join(t.TempDir(), "flipped.db")
	if err := os.WriteFile(flipped, flipBit(data, len(data)/2), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		file     string
		sha      string
		wantCode int
		// wantStderr are substrings of stderr.
		wantStderr []string
	}{
		{name: "recorded digest", file: good, sha: digest, wantCode: 0},
		{name: "recorded digest in upper case", file: good, sha: strings.ToUpper(digest), wantCode: 0},
		{
			name: "file replaced at rest", file: other, sha: digest, wantCode: 1,
			wantStderr: []string{"snapshot " + other + " differs from the one recorded (damaged at rest)", otherDigest, digest},
		},
		{name: "bit flipped at rest", file: flipped, sha: digest, wantCode: 1, wantStderr: []string{"snapshot " + flipped + ": sha256 mismatch"}},
		{name: "too short", file: good, sha: digest[:63], wantCode: 2, wantStderr: []string{"-sha256", "64 hex digits"}},
		{name: "not hex", file: good, sha: "z" + digest[1:], wantCode: 2, wantStderr: []string{"-sha256", "not a sha256 digest"}},
		{name: "sha256sum line", file: good, sha: digest + "  snapshot.db", wantCode: 2, wantStderr: []string{"-sha256"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			termLog := filepath.Join(t.TempDir(), "termination-log")
			var stdout, stderr bytes.Buffer
			code := RunVerify(VerifyOptions{File: tc.file, SHA256: tc.sha, TerminationLog: termLog}, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, tc.wantCode, stderr.String())
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not contain %q", stderr.String(), w)
				}
			}
			logged, _ := os.ReadFile(termLog)
			switch tc.wantCode {
			case 0:
				var res VerifyResult
				if err := json.Unmarshal(logged, &res); err != nil || res.SHA256 != digest {
					t.Errorf("termination log %q: %v, want the result with sha256 %s", logged, err, digest)
				}
			case 1:
				if strings.TrimSpace(stderr.String()) != string(logged) || stdout.Len() != 0 {
					t.Errorf("termination log %q, stderr %q, stdout %q: want the one-line reason in both and no result", logged, stderr.String(), stdout.String())
				}
			case 2:
				if stdout.Len() != 0 || len(logged) != 0 {
					t.Errorf("usage error wrote a result: stdout %q, termination log %q", stdout.String(), logged)
				}
			}
		})
	}
}
