package rig

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

const (
	// LauncherImage is the image name the pod runner maps to the etcd launcher (tools/rig/cmd/etcd-launcher)
	// and the upstream etcd, etcdctl and etcdutl beside it: the image of the rig's etcd StatefulSets.
	LauncherImage = "rig.local/etcd-launcher:dev"
	// LauncherBinary is the launcher's file name in the directory EnsureLauncher returns, and the
	// command of the etcd container.
	LauncherBinary = "etcd-launcher"
)

// EnsureLauncher builds the etcd launcher from the checkout (as EnsureDriver builds the driver) and
// returns the directory holding it as LauncherBinary.
func EnsureLauncher(ctx context.Context, progress io.Writer) (string, error) {
	return ensureBuilt(ctx, progress, "launcher", LauncherBinary, "the etcd launcher", func(root, out string, progress io.Writer) error {
		return goBuild(ctx, progress, LauncherBinary, root, out, "", "./tools/rig/cmd/etcd-launcher")
	})
}

// installLauncherImage makes the launcher image directory <Root>/images/etcd-launcher: a private copy
// of the launcher (a rebuild by another test process never swaps it under a running rig) and links to
// the upstream etcd, which the launcher finds first on the container's PATH, etcdctl and etcdutl.
func (r *Rig) installLauncherImage(built string) error {
	dir := filepath.Join(r.Root, "images", "etcd-launcher")
	if err := copyFile(filepath.Join(built, LauncherBinary), filepath.Join(dir, LauncherBinary)); err != nil {
		return err
	}
	// etcdctl and etcdutl too, as in etcd's own image, for whoever takes the StatefulSet's image to run them.
	for _, b := range []string{"etcd", "etcdctl", "etcdutl"} {
		link := filepath.Join(dir, b)
		os.Remove(link)
		if err := os.Symlink(filepath.Join(r.BinDir, b), link); err != nil {
			return fmt.Errorf("rig: launcher image: %w", err)
		}
	}
	r.LauncherBinDir = dir
	return nil
}
