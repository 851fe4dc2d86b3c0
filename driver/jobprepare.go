package driver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// partSuffix is what `etcdctl snapshot save` appends to the file it writes before renaming it into
// place (client/v3/snapshot: SaveWithVersion).
const partSuffix = ".part"

// RunPrepareSave is the `prepare-save` subcommand once its flags are parsed (main.go), the container
// that runs before the save in every attempt of a snapshot Job's pod: it removes the snapshot file
// and etcdctl's "<file>.part" that a failed attempt left (a verify that failed after a complete save,
// a pod killed mid-save), so the retried save never needs room for two copies on a volume sized for
// one. It returns 1 when a file cannot be removed.
func RunPrepareSave(file string, stdout, stderr io.Writer) int {
	for _, path := range []string{file + partSuffix, file} {
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && info.IsDir() {
			err = errors.New("is a directory, not a snapshot file")
		}
		if err == nil {
			err = os.Remove(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "prepare-save: cannot remove %s left by an earlier attempt: %v\n", path, err)
			return 1
		}
		fmt.Fprintf(stdout, "prepare-save: removed %s (%d bytes) left by an earlier attempt\n", path, info.Size())
	}
	return 0
}
