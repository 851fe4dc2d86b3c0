package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// restoreMarker is the write-ahead record of a restore in the volume.
type restoreMarker struct {
	RestoreID string `json:"restoreId"`
	State     string `json:"state"`
	// KeptAt is decided before anything moves: the kept name, or "" for a volume without a data dir.
	KeptAt string `json:"keptAt"`
	// Revision and Keys are the restored member's, so a rerun after the swap reports them without
	// opening a database etcd may have changed since.
	Revision  int64     `json:"revision"`
	Keys      int64     `json:"keys"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// begin checks the restored scratch dir and decides, before anything moves, where the old data goes.
func (s *restoreStep) begin() (*restoreMarker, error) {
	m := &restoreMarker{RestoreID: s.id, State: stateMovingOld}
	var err error
	if m.Revision, m.Keys, err = s.readRestored(); err != nil {
		return nil, err
	}
	switch dataExists, err := exists(s.data); {
	case err != nil:
		return nil, err
	case dataExists:
		m.KeptAt = s.relative(s.kept)
	}
	// The marker does not record this restore, so a kept copy of its name is not from it: never move
	// data onto it or claim it.
	switch keptExists, err := exists(s.kept); {
	case err != nil:
		return nil, err
	case keptExists:
		return nil, fmt.Errorf("%s already exists but marker %s does not record restore %s: refusing to touch it; restore with a new restore id", s.kept, s.marker, s.id)
	}
	if err := s.writeMarker(m); err != nil {
		return nil, err
	}
	return m, nil
}

// moveOldAside renames the data dir to the kept name, unless the marker's kept name shows it already
// happened, then records the next state.
func (s *restoreStep) moveOldAside(m *restoreMarker) error {
	dataExists, err := exists(s.data)
	if err != nil {
		return err
	}
	if m.KeptAt == "" {
		if dataExists {
			return fmt.Errorf("%s appeared during restore %s, which found the volume without a data dir: refusing to replace it; move it away and run the restore again", s.data, s.id)
		}
	} else {
		keptExists, err := exists(s.kept)
		if err != nil {
			return err
		}
		if dataExists && !keptExists {
			// Nothing moves before the restored member is known to be there to take the old one's place.
			if m.Revision, m.Keys, err = s.readRestored(); err != nil {
				return err
			}
		}
		switch {
		case dataExists && keptExists:
			return fmt.Errorf("both %s and %s exist during restore %s: refusing to choose; keep the one holding the old data at %s", s.data, s.kept, s.id, s.kept)
		case !dataExists && !keptExists:
			return fmt.Errorf("restore %s: the old data dir is neither at %s nor at %s", s.id, s.data, s.kept)
		case dataExists:
			if err := os.Rename(s.data, s.kept); err != nil {
				return fmt.Errorf("move the old data dir aside: %v", err)
			}
			if err := syncDir(filepath.Dir(s.data)); err != nil {
				return err
			}
			s.logf("moved the old data dir %s to %s", s.rel, m.KeptAt)
			if err := s.crashed("old moved aside"); err != nil {
				return err
			}
		}
	}
	m.State = stateMovingRestored
	return s.writeMarker(m)
}

// moveRestoredIn renames the scratch dir to the data dir, unless the data dir already is the restored
// one (nothing else can put one there once the old one is aside), then records done.
func (s *restoreStep) moveRestoredIn(m *restoreMarker) error {
	dataExists, err := exists(s.data)
	if err != nil {
		return err
	}
	if !dataExists {
		// Checked again: a retried pod may have restored the scratch dir anew since the marker was written.
		if m.Revision, m.Keys, err = s.readRestored(); err != nil {
			return err
		}
		if err := os.Rename(s.scratch, s.data); err != nil {
			return fmt.Errorf("move the restored data dir into place: %v", err)
		}
		if err := syncDir(filepath.Dir(s.data)); err != nil {
			return err
		}
		s.logf("moved the restored data dir %s to %s", s.relative(s.scratch), s.rel)
		if err := s.crashed("restored moved in"); err != nil {
			return err
		}
	}
	m.State = stateDone
	return s.writeMarker(m)
}

// deleteKept removes this restore's kept copy of the old data, recording first that it is gone so a
// crash halfway never reports a partial copy as kept; a rerun removes the rest.
func (s *restoreStep) deleteKept(m *restoreMarker) error {
	if m.KeptAt != "" {
		m.KeptAt = ""
		if err := s.writeMarker(m); err != nil {
			return err
		}
	}
	keptExists, err := exists(s.kept)
	if err != nil || !keptExists {
		return err
	}
	if err := os.RemoveAll(s.kept); err != nil {
		return fmt.Errorf("delete the old data dir (-delete-old): %v", err)
	}
	if err := syncDir(filepath.Dir(s.kept)); err != nil {
		return err
	}
	s.logf("deleted the old data dir %s (-delete-old)", s.relative(s.kept))
	return s.crashed("kept deleted")
}

// removeScratch removes this restore's scratch dir, partial or complete.
func (s *restoreStep) removeScratch() error {
	scratchExists, err := exists(s.scratch)
	if err != nil || !scratchExists {
		return err
	}
	if err := os.RemoveAll(s.scratch); err != nil {
		return fmt.Errorf("remove the leftover restore dir %s: %v", s.scratch, err)
	}
	if err := syncDir(filepath.Dir(s.scratch)); err != nil {
		return err
	}
	s.logf("removed the leftover restore dir %s", s.relative(s.scratch))
	return s.crashed("scratch removed")
}

// refuseOtherUnfinished stops a restore while another one is halfway through a swap on the volume: its
// marker holds the only record of where that one's old data went.
func (s *restoreStep) refuseOtherUnfinished(m *restoreMarker) error {
	if m == nil || m.RestoreID == s.id || m.State == stateDone {
		return nil
	}
	return fmt.Errorf("volume holds restore %s unfinished (marker %s, state %s): run that restore again to finish it before restore %s", m.RestoreID, s.marker, m.State, s.id)
}

// readMarker returns the volume's marker, nil when there is none.
func (s *restoreStep) readMarker() (*restoreMarker, error) {
	b, err := os.ReadFile(s.marker)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read marker: %v", err)
	}
	var m restoreMarker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("marker %s is not a restore marker: %v", s.marker, err)
	}
	if m.RestoreID == "" || m.State == "" {
		return nil, fmt.Errorf("marker %s has no restore id or state: %s", s.marker, b)
	}
	return &m, nil
}

// writeMarker replaces the marker atomically and durably: a crash leaves the old or the new one.
func (s *restoreStep) writeMarker(m *restoreMarker) error {
	m.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode marker: %v", err)
	}
	tmp := s.marker + ".tmp"
	if err := writeFileSync(tmp, b); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write marker: %v", err)
	}
	if err := s.crashed("marker " + m.State + " temp written"); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.marker); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write marker: %v", err)
	}
	if err := syncDir(filepath.Dir(s.marker)); err != nil {
		return err
	}
	return s.crashed("marker " + m.State + " written")
}

// writeFileSync writes a new 0600 file (like etcd's own files) and syncs it to disk.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	return errors.Join(werr, serr, f.Close())
}

// syncDir makes the renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %v", dir, err)
	}
	serr := d.Sync()
	if err := errors.Join(serr, d.Close()); err != nil {
		return fmt.Errorf("sync %s: %v", dir, err)
	}
	return nil
}

// exists reports whether path exists, not following a final symlink.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
