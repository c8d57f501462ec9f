package tracing

// The cursor: each sink's acknowledged position, saved so that a restart re-sends each sink
// only what it had not acknowledged. It is saved after every segment deletion, every
// cursorInterval (2s) while positions move, and on Shutdown, so a crash re-sends to each
// sink at most what it acknowledged in the last cursorInterval (or since the last segment
// deletion), never what another, slower sink lacks.
//
// SpoolDir/acked is "LOOMACK2", a uint32 count of sinks, one uint64 sequence number per
// sink in PipelineConfig.Sinks order, and a CRC-32C of all that. The older "LOOMACK1" (one
// number for all sinks) is still read. When the number of sinks differs from the file's,
// every sink starts at the lowest position saved (re-delivery, never loss).

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	cursorName    = "acked"
	cursorMagicV1 = "LOOMACK1"
	cursorMagic   = "LOOMACK2"

	defaultCursorInterval = 2 * time.Second
)

// readCursor returns the positions in dir's cursor file, one per sink (nil if there is no
// file). A damaged cursor is reported and read as nil, which only means re-delivery.
func readCursor(dir string, tab *crc32.Table) ([]uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	damaged := errors.New("tracing: spool: damaged cursor file, re-delivering the whole spool")
	if len(b) < len(cursorMagic)+4 || crc32.Checksum(b[:len(b)-4], tab) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, damaged
	}
	body := b[len(cursorMagic) : len(b)-4]
	switch string(b[:len(cursorMagic)]) {
	case cursorMagicV1:
		if len(body) != 8 {
			return nil, damaged
		}
		return []uint64{binary.LittleEndian.Uint64(body)}, nil
	case cursorMagic:
		n := int(binary.LittleEndian.Uint32(body))
		body = body[4:]
		if len(body) != 8*n {
			return nil, damaged
		}
		acks := make([]uint64, n)
		for i := range acks {
			acks[i] = binary.LittleEndian.Uint64(body[8*i:])
		}
		return acks, nil
	}
	return nil, damaged
}

// writeCursor replaces dir's cursor file with acks, atomically and durably.
func writeCursor(dir string, acks []uint64, tab *crc32.Table) error {
	b := make([]byte, 0, len(cursorMagic)+4+8*len(acks)+4)
	b = append(b, cursorMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(acks)))
	for _, a := range acks {
		b = binary.LittleEndian.AppendUint64(b, a)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, tab))
	return replaceFile(filepath.Join(dir, cursorName), b)
}

// startPositions maps the saved positions onto n sinks: as saved when the count matches,
// else every sink at the lowest saved position.
func startPositions(saved []uint64, n int) []uint64 {
	if len(saved) == n {
		return saved
	}
	var low uint64
	if len(saved) > 0 {
		low = slices.Min(saved)
	}
	acks := make([]uint64, n)
	for i := range acks {
		acks[i] = low
	}
	return acks
}

// positionsLocked returns each sink's acknowledged position.
func (p *Pipeline) positionsLocked() []uint64 {
	acks := make([]uint64, len(p.shippers))
	for i, sh := range p.shippers {
		acks[i] = sh.position()
	}
	return acks
}

// askSave asks the cursor saver to save now (after a segment deletion).
func (p *Pipeline) askSave() {
	select {
	case p.saveReq <- struct{}{}:
	default:
	}
}

// runCursorSaver saves the positions every cursorInterval and whenever askSave asks, if
// they moved. Shutdown stops it before it saves the final positions itself.
func (p *Pipeline) runCursorSaver() {
	defer close(p.saverDone)
	tick := time.NewTicker(p.cursorInterval)
	defer tick.Stop()
	var saved []uint64
	for {
		select {
		case <-tick.C:
		case <-p.saveReq:
		case <-p.stopSaver:
			return
		}
		p.mu.Lock()
		acks := p.positionsLocked()
		p.mu.Unlock()
		if slices.Equal(acks, saved) {
			continue
		}
		if err := writeCursor(p.dir, acks, p.crc); err != nil {
			p.log.Warn("tracing: spool: saving the sinks' positions", "err", err)
			continue
		}
		saved = acks
	}
}
