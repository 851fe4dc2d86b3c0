package driver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
)

// bbolt's on-disk format (go.etcd.io/bbolt internal/common: page.go, meta.go, types.go), little endian
// on every platform etcd supports.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	boltElementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltMetaSize       = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	boltMetaSumLen     = 56 // the checksum covers the meta up to itself
	boltBucketHeader   = 16 // root u64, sequence u64, then an inline page when root is 0
	boltBranchPage     = 0x01
	boltLeafPage       = 0x02
	boltFreelistPage   = 0x10
	boltBucketLeaf     = 0x01
	boltNoFreelist     = ^uint64(0)
	boltMaxDepth       = 64
	boltDefaultPage    = 4096
)

// precheckBolt walks the page graph of the bbolt file in db (the snapshot without its trailer) the way
// bbolt will, with bounds checks bbolt does not make. bbolt reads pages through its mmap and walks the
// tree in goroutines of its own (tx.Check, and the freelist rebuild of databases without a synced
// freelist, as etcd writes them): a page id beyond the file faults (SIGBUS) and a bad page panics
// there, which no recover in the caller can catch, so a truncated or crafted snapshot would crash the
// verifier instead of failing verification. Only a file this walk accepts is handed to bbolt.
func precheckBolt(f io.ReaderAt, size int64) error {
	if size < 2*boltDefaultPage {
		return fmt.Errorf("bbolt database too small: %d bytes, less than two pages", size)
	}
	meta, err := readBoltMeta(f)
	if err != nil {
		return err
	}
	w := &boltWalker{f: f, size: size, pageSize: int64(meta.pageSize), hwm: meta.pgid, seen: map[uint64]bool{}}
	if w.pageSize < 512 || w.pageSize > 1<<20 || w.pageSize&(w.pageSize-1) != 0 {
		return fmt.Errorf("bbolt meta page names page size %d", w.pageSize)
	}
	if meta.pgid < 2 || meta.pgid > uint64(size/w.pageSize) {
		return fmt.Errorf("bbolt database truncated: its meta page counts %d pages of %d bytes, the file holds %d bytes", meta.pgid, w.pageSize, size)
	}
	if meta.freelist != boltNoFreelist {
		if err := w.freelist(meta.freelist); err != nil {
			return err
		}
	}
	if _, err := w.tree(meta.root, nil, nil, 0); err != nil {
		return fmt.Errorf("bbolt database corrupt: %w", err)
	}
	return nil
}

// boltMeta is the part of a meta page the walk needs.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readBoltMeta picks the meta page bbolt would: the valid one of the two with the higher txid.
func readBoltMeta(f io.ReaderAt) (boltMeta, error) {
	m0, err0 := readBoltMetaAt(f, 0)
	offset := int64(boltDefaultPage)
	if err0 == nil {
		offset = int64(m0.pageSize)
	}
	m1, err1 := readBoltMetaAt(f, offset)
	switch {
	case err0 != nil && err1 != nil:
		return boltMeta{}, fmt.Errorf("not a readable bbolt database: %v", err0)
	case err0 != nil:
		return m1, nil
	case err1 != nil || m0.txid >= m1.txid:
		return m0, nil
	}
	return m1, nil
}

func readBoltMetaAt(f io.ReaderAt, pageOffset int64) (boltMeta, error) {
	b := make([]byte, boltMetaSize)
	if _, err := f.ReadAt(b, pageOffset+boltPageHeaderSize); err != nil {
		return boltMeta{}, fmt.Errorf("meta page at %d unreadable: %v", pageOffset, err)
	}
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(b[:boltMetaSumLen])
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return boltMeta{}, fmt.Errorf("meta page at %d has no bbolt magic", pageOffset)
	case le.Uint32(b[4:]) != boltVersion:
		return boltMeta{}, fmt.Errorf("meta page at %d has bbolt version %d", pageOffset, le.Uint32(b[4:]))
	case le.Uint64(b[56:]) != h.Sum64():
		return boltMeta{}, fmt.Errorf("meta page at %d fails its checksum", pageOffset)
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, nil
}

// boltWalker visits every page reachable from the root bucket.
type boltWalker struct {
	f        io.ReaderAt
	size     int64
	pageSize int64
	hwm      uint64
	seen     map[uint64]bool
}

// page reads page id with its overflow pages, after checking they lie below the high water mark.
func (w *boltWalker) page(id uint64, flags uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d is outside the database (pages 2..%d)", id, w.hwm-1)
	}
	head := make([]byte, boltPageHeaderSize)
	if _, err := w.f.ReadAt(head, int64(id)*w.pageSize); err != nil {
		return nil, fmt.Errorf("page %d unreadable: %v", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(head); got != id {
		return nil, fmt.Errorf("page %d holds page id %d", id, got)
	}
	if got := le.Uint16(head[8:]); got == 0 || got&^flags != 0 {
		return nil, fmt.Errorf("page %d has type %#x, want %#x", id, got, flags)
	}
	overflow := uint64(le.Uint32(head[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("page %d overflows %d pages past the database end", id, overflow)
	}
	buf := make([]byte, int64(1+overflow)*w.pageSize)
	if _, err := w.f.ReadAt(buf, int64(id)*w.pageSize); err != nil {
		return nil, fmt.Errorf("page %d unreadable: %v", id, err)
	}
	return buf, nil
}

// freelist checks the synced freelist page: its ids must fit the page.
func (w *boltWalker) freelist(id uint64) error {
	p, err := w.page(id, boltFreelistPage)
	if err != nil {
		return fmt.Errorf("bbolt freelist: %w", err)
	}
	count, start := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(boltPageHeaderSize)
	if count == 0xFFFF {
		count, start = binary.LittleEndian.Uint64(p[boltPageHeaderSize:]), boltPageHeaderSize+8
	}
	if count > uint64(len(p))/8 || start+count*8 > uint64(len(p)) {
		return fmt.Errorf("bbolt freelist page %d claims %d ids, more than it holds", id, count)
	}
	return nil
}

// tree walks the pages of a bucket rooted at page id, whose keys must lie in [minKey, maxKey) (nil:
// unbounded), and returns the largest key found. These are the rules bbolt's own walk reports as
// errors (go.etcd.io/bbolt tx_check.go): pages in bounds and referenced once, branch or leaf type,
// keys strictly ascending within a page and within their parent's range. bbolt's freelist rebuild
// stops at its first error while its walking goroutine runs on over memory about to be unmapped, so
// any of them must be found here first.
func (w *boltWalker) tree(id uint64, minKey, maxKey []byte, depth int) ([]byte, error) {
	if depth > boltMaxDepth {
		return nil, fmt.Errorf("page %d: the tree is deeper than %d", id, boltMaxDepth)
	}
	p, err := w.page(id, boltBranchPage|boltLeafPage)
	if err != nil {
		return nil, err
	}
	for i := uint64(0); i < uint64(len(p))/uint64(w.pageSize); i++ {
		if w.seen[id+i] {
			return nil, fmt.Errorf("page %d is referenced twice", id+i)
		}
		w.seen[id+i] = true
	}
	return w.elements(p, id, minKey, maxKey, depth)
}

// elements checks every element of page p (a page of the file, or an inline bucket's page) and walks
// on into child pages and buckets.
func (w *boltWalker) elements(p []byte, id uint64, minKey, maxKey []byte, depth int) ([]byte, error) {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != boltBranchPage && flags != boltLeafPage {
		return nil, fmt.Errorf("page %d has type %#x inside a bucket", id, flags)
	}
	if boltPageHeaderSize+count*boltElementSize > len(p) {
		return nil, fmt.Errorf("page %d claims %d elements, more than it holds", id, count)
	}
	// keyAt returns the key of element i, checked to lie inside the page.
	keyAt := func(i int) ([]byte, uint64, error) {
		at := uint64(boltPageHeaderSize + i*boltElementSize)
		e := p[at : at+boltElementSize]
		pos, ksize := uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
		if flags == boltLeafPage {
			pos, ksize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:]))
		}
		if at+pos+ksize > uint64(len(p)) {
			return nil, 0, fmt.Errorf("page %d element %d: key beyond the page", id, i)
		}
		return p[at+pos : at+pos+ksize], at + pos + ksize, nil
	}
	previous, largest := minKey, []byte(nil)
	for i := range count {
		key, keyEnd, err := keyAt(i)
		if err != nil {
			return nil, err
		}
		switch {
		case previous != nil && i == 0 && bytes.Compare(previous, key) > 0,
			i > 0 && bytes.Compare(previous, key) >= 0:
			return nil, fmt.Errorf("page %d element %d: keys out of order", id, i)
		case maxKey != nil && bytes.Compare(key, maxKey) >= 0:
			return nil, fmt.Errorf("page %d element %d: key beyond its parent's range", id, i)
		}
		e := p[boltPageHeaderSize+i*boltElementSize:]
		if flags == boltBranchPage {
			next := maxKey
			if i+1 < count {
				if next, _, err = keyAt(i + 1); err != nil {
					return nil, err
				}
			}
			if largest, err = w.tree(le.Uint64(e[8:]), key, next, depth+1); err != nil {
				return nil, err
			}
			previous = largest
			continue
		}
		previous, largest = key, key
		eflags, vsize := le.Uint32(e[0:]), uint64(le.Uint32(e[12:]))
		if keyEnd+vsize > uint64(len(p)) {
			return nil, fmt.Errorf("page %d element %d: value beyond the page", id, i)
		}
		if eflags&boltBucketLeaf == 0 {
			continue
		}
		value := p[keyEnd : keyEnd+vsize]
		if len(value) < boltBucketHeader {
			return nil, fmt.Errorf("page %d element %d: bucket header truncated", id, i)
		}
		if root := le.Uint64(value); root != 0 {
			if _, err := w.tree(root, nil, nil, depth+1); err != nil {
				return nil, err
			}
			continue
		}
		inline := value[boltBucketHeader:]
		if len(inline) < boltPageHeaderSize || le.Uint16(inline[8:]) != boltLeafPage {
			return nil, fmt.Errorf("page %d element %d: inline bucket is not a leaf page", id, i)
		}
		if _, err := w.elements(inline, id, nil, nil, depth+1); err != nil {
			return nil, err
		}
	}
	return largest, nil
}
