package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The suffixes of the names the restore steps give, beside the data dir, to what they keep, scratch and
// record. A name that carries the restore id belongs to that restore.
const (
	restoreScratchSuffix = ".restore-"
	restoreKeptSuffix    = ".before-restore-"
	restoreMarkerSuffix  = ".restore-state.json"
	restoreProbeSuffix   = ".restore-probe-"
)

// The states of a restore in its marker, each written before the step it names, so that a rerun knows
// which moves already happened: a move is one rename, and the marker says which way it went.
const (
	// stateMovingOld: the old data dir is being moved aside to the kept name (or there is none).
	stateMovingOld = "moving-old"
	// stateMovingRestored: the old data dir is aside (or never existed); the restored dir is moving in.
	stateMovingRestored = "moving-restored"
	// stateDone: the restored dir is the data dir.
	stateDone = "done"
)

// RestoreStepResult is what the restore-step subcommand prints and leaves in the termination log.
// Paths are relative to the volume, so they name the place in the member's PVC.
type RestoreStepResult struct {
	// RestoreID is the -restore-id of the step.
	RestoreID string `json:"restoreId"`
	// DataDir is the member's data dir, -data-dir.
	DataDir string `json:"dataDir"`
	// KeptAt is where the old data dir was moved aside; "" when the volume had none or -delete-old
	// removed it.
	KeptAt string `json:"keptAt"`
	// Revision is the store revision of the restored member (bump included); 0 from prepare unless done.
	Revision int64 `json:"revision"`
	// Keys is the number of live keys of the restored member; 0 from prepare unless done.
	Keys int64 `json:"keys"`
	// AlreadyDone is true when the volume's marker already recorded this restore as swapped, so the
	// step changed nothing but its own scratch.
	AlreadyDone bool `json:"alreadyDone"`
}

// restoreStep holds the names one restore uses in one volume.
type restoreStep struct {
	volume, rel, id string
	// data, scratch, kept, marker and probe are absolute paths beside each other.
	data, scratch, kept, marker, probe string
	progress                           io.Writer
	// restored caches readRestored: nothing else writes the scratch dir while a step runs.
	restored *VerifyResult
	// crashPoint, when set, is called after each durable change; an error stops the step there, as a
	// crash would, leaving everything on disk as it is.
	crashPoint func(point string) error
}

// newRestoreStep checks the flags and derives the names; errors name the flag.
func newRestoreStep(volume, rel, id string, progress io.Writer) (*restoreStep, error) {
	switch info, err := os.Stat(volume); {
	case volume == "":
		return nil, errors.New("-volume is required: the mount path of the member's volume")
	case err != nil:
		return nil, fmt.Errorf("-volume %q: %v", volume, err)
	case !info.IsDir():
		return nil, fmt.Errorf("-volume %q is not a directory", volume)
	}
	if err := checkDataDirFlag(rel); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, errors.New("-restore-id is required")
	}
	if msgs := validation.IsDNS1123Label(id); len(msgs) > 0 {
		return nil, fmt.Errorf("-restore-id %q: %s", id, strings.Join(msgs, "; "))
	}
	data := filepath.Join(volume, rel)
	s := &restoreStep{
		volume: volume, rel: rel, id: id, data: data, progress: progress,
		scratch: data + restoreScratchSuffix + id,
		kept:    data + restoreKeptSuffix + id,
		marker:  data + restoreMarkerSuffix,
		probe:   data + restoreProbeSuffix + id,
	}
	if err := s.checkParents(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkDataDirFlag accepts a clean relative path below the volume root.
func checkDataDirFlag(rel string) error {
	switch {
	case rel == "":
		return errors.New("-data-dir is required: the etcd data dir relative to -volume, like \"data\"")
	case filepath.IsAbs(rel):
		return fmt.Errorf("-data-dir %q must be relative to -volume, not absolute", rel)
	case rel == ".":
		return fmt.Errorf("-data-dir %q names the volume itself; the data dir must be a directory inside it", rel)
	case filepath.Clean(rel) != rel:
		return fmt.Errorf("-data-dir %q is not a clean path (want %q)", rel, filepath.Clean(rel))
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == ".." {
			return fmt.Errorf("-data-dir %q must stay inside the volume: no \"..\"", rel)
		}
	}
	return nil
}

// checkParents refuses a data dir whose existing parents are not plain directories: a symlink there
// would move and remove things outside the volume.
func (s *restoreStep) checkParents() error {
	dir := s.volume
	parts := strings.Split(s.rel, string(filepath.Separator))
	for _, part := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, part)
		info, err := os.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("-data-dir %q: %v", s.rel, err)
		case info.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("-data-dir %q: %s is a symlink; the data dir must be inside the volume", s.rel, dir)
		case !info.IsDir():
			return fmt.Errorf("-data-dir %q: %s is not a directory (%s)", s.rel, dir, info.Mode().Type())
		}
	}
	return nil
}

// relative returns a path of this restore relative to the volume.
func (s *restoreStep) relative(path string) string {
	rel, err := filepath.Rel(s.volume, path)
	if err != nil {
		return path
	}
	return rel
}

// crashed reports the crash point to the test hook, if any.
func (s *restoreStep) crashed(point string) error {
	if s.crashPoint == nil {
		return nil
	}
	return s.crashPoint(point)
}

// logf writes one progress line.
func (s *restoreStep) logf(format string, args ...any) {
	fmt.Fprintf(s.progress, "restore-step %s: "+format+"\n", append([]any{s.id}, args...)...)
}

// prepare makes way for `etcdutl snapshot restore` into the scratch dir, which refuses a non-empty
// directory: it removes the scratch left by an earlier attempt and checks the volume is writable.
func (s *restoreStep) prepare() (*RestoreStepResult, error) {
	m, err := s.readMarker()
	if err != nil {
		return nil, err
	}
	if err := s.refuseOtherUnfinished(m); err != nil {
		return nil, err
	}
	res := &RestoreStepResult{RestoreID: s.id, DataDir: s.rel}
	if m != nil && m.RestoreID == s.id && m.State == stateDone {
		res.KeptAt, res.Revision, res.Keys, res.AlreadyDone = m.KeptAt, m.Revision, m.Keys, true
	}
	// The scratch dir is ours by name; after a done swap it can only be a retried pod's second restore,
	// which etcdutl would refuse to write over.
	if err := s.removeScratch(); err != nil {
		return nil, err
	}
	if err := s.probeWritable(); err != nil {
		return nil, err
	}
	return res, nil
}

// probeWritable creates and removes a file where etcdutl will create the scratch dir, so that a volume
// the pod's user cannot write is reported before etcdutl runs.
func (s *restoreStep) probeWritable() error {
	dir := filepath.Dir(s.probe)
	// A nested data dir on a fresh volume: etcdutl creates the missing parents inside the nearest one.
	for {
		if _, err := os.Stat(dir); err == nil || dir == s.volume {
			break
		}
		dir = filepath.Dir(dir)
	}
	probe := filepath.Join(dir, filepath.Base(s.probe))
	if err := os.Remove(probe); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove leftover probe %s: %v", probe, err)
	}
	f, err := os.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("volume not writable by uid %d gid %d: %v", os.Getuid(), os.Getgid(), err)
	}
	_, werr := f.Write([]byte("restore probe\n"))
	cerr := f.Close()
	if err := s.crashed("probe created"); err != nil {
		return err
	}
	rerr := os.Remove(probe)
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return fmt.Errorf("volume not writable by uid %d gid %d: probe %s: %v", os.Getuid(), os.Getgid(), probe, err)
	}
	return nil
}

// swap puts the restored scratch dir in place of the data dir, keeping the old one, and records each
// step in the marker first so that a rerun after a crash anywhere finishes the same swap.
func (s *restoreStep) swap(deleteOld bool) (*RestoreStepResult, error) {
	m, err := s.readMarker()
	if err != nil {
		return nil, err
	}
	if err := s.refuseOtherUnfinished(m); err != nil {
		return nil, err
	}
	alreadyDone := m != nil && m.RestoreID == s.id && m.State == stateDone
	if m == nil || m.RestoreID != s.id {
		if m, err = s.begin(); err != nil {
			return nil, err
		}
	}
	if m.State == stateMovingOld {
		if err := s.moveOldAside(m); err != nil {
			return nil, err
		}
	}
	if m.State == stateMovingRestored {
		if err := s.moveRestoredIn(m); err != nil {
			return nil, err
		}
	}
	if m.State != stateDone {
		return nil, fmt.Errorf("marker %s: unknown state %q for restore %s", s.marker, m.State, s.id)
	}
	// A retried pod restores again after a done swap; that copy is scratch.
	if err := s.removeScratch(); err != nil {
		return nil, err
	}
	if deleteOld {
		if err := s.deleteKept(m); err != nil {
			return nil, err
		}
	}
	return &RestoreStepResult{
		RestoreID: s.id, DataDir: s.rel, KeptAt: m.KeptAt, Revision: m.Revision, Keys: m.Keys, AlreadyDone: alreadyDone,
	}, nil
}

// readRestored checks the scratch dir holds a member as `etcdutl snapshot restore` writes it and reads
// its revision and live key count.
func (s *restoreStep) readRestored() (revision, keys int64, err error) {
	if s.restored != nil {
		return s.restored.Revision, s.restored.Keys, nil
	}
	wal := filepath.Join(s.scratch, "member", "wal")
	wals, err := filepath.Glob(filepath.Join(wal, "*.wal"))
	if err == nil && len(wals) == 0 {
		err = errors.New("no WAL file")
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s holds no restored member (run etcdutl snapshot restore into it first): %s: %v", s.scratch, wal, err)
	}
	db := filepath.Join(s.scratch, "member", "snap", "db")
	if _, err := os.Stat(db); err != nil {
		return 0, 0, fmt.Errorf("%s holds no restored member (run etcdutl snapshot restore into it first): %v", s.scratch, err)
	}
	var res VerifyResult
	if err := readBackend(db, &res); err != nil {
		return 0, 0, fmt.Errorf("restored member %s: %w", db, err)
	}
	s.restored = &res
	return res.Revision, res.Keys, nil
}

// RestoreStepOptions are the step and the flags of the restore-step subcommand.
type RestoreStepOptions struct {
	// Step is "prepare" (before etcdutl snapshot restore) or "swap" (after it).
	Step string
	// Volume is the mount path of the member's volume (-volume).
	Volume string
	// DataDir is the etcd data dir relative to Volume, like "data" (-data-dir).
	DataDir string
	// RestoreID is the id of this restore; it names the restored, kept and marker files (-restore-id).
	RestoreID string
	// DeleteOld deletes the old data dir after the swap instead of keeping it (-delete-old, swap only).
	DeleteOld bool
	// TerminationLog receives the result for the pod's termination message; "" skips it
	// (-termination-log).
	TerminationLog string
}

// RunRestoreStep is the `restore-step` subcommand once its flags are parsed (main.go), run by a
// restore Job's pod in the member's volume. It prints a RestoreStepResult as JSON and writes it to the
// termination log; on failure it writes a one-line reason to both the termination log and stderr and
// returns 1 (2 for options that name no usable volume, data dir or restore id).
func RunRestoreStep(o RestoreStepOptions, stdout, stderr io.Writer) int {
	step := o.Step
	fail := func(code int, msg string) int {
		return ReportFailure(o.TerminationLog, code, msg, stderr)
	}
	if step != "prepare" && step != "swap" {
		return fail(2, fmt.Sprintf("restore-step: unknown step %q; want prepare or swap", step))
	}
	s, err := newRestoreStep(o.Volume, o.DataDir, o.RestoreID, stderr)
	if err != nil {
		return fail(2, fmt.Sprintf("restore-step %s: %v", step, err))
	}
	var res *RestoreStepResult
	if step == "prepare" {
		res, err = s.prepare()
	} else {
		res, err = s.swap(o.DeleteOld)
	}
	if err != nil {
		return fail(1, fmt.Sprintf("restore-step %s %s in %s: %v", step, s.id, s.volume, err))
	}
	out, err := json.Marshal(res)
	if err != nil {
		return fail(1, fmt.Sprintf("restore-step %s: encode result: %v", step, err))
	}
	if err := writeTerminationLog(o.TerminationLog, string(out), stderr); err != nil {
		// On success the pod's message comes only from this file, so a result not written is a failure.
		return fail(1, fmt.Sprintf("restore-step %s %s done but the result could not be recorded: %v", step, s.id, err))
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}
