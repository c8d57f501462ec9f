package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-gateway/loom/tracing"
)

// load generates the traces in time order, in batches, with workers generators, and writes
// them through sink with writers concurrent writers; progress is called every ten seconds.
func load(ctx context.Context, g *generator, sink tracing.Sink, batch, workers, writers int, seed uint64, progress func(int64)) (int64, error) {
	batches := make(chan []*tracing.Trace, workers*2)
	var (
		written  atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := sink.WriteBatch(ctx, b); err != nil {
					fail(err)
					continue
				}
				written.Add(int64(len(b)))
			}
		}()
	}
	// Generating (sealing, encoding) is spread over workers too; batches keep time order.
	gens := make([]chan []*tracing.Trace, workers)
	for w := range gens {
		gens[w] = make(chan []*tracing.Trace, 1)
		go func(w int) {
			defer close(gens[w])
			r := rand.New(rand.NewPCG(seed, uint64(w)+2))
			for start := int64(w * batch); start < g.n; start += int64(workers * batch) {
				b := make([]*tracing.Trace, 0, batch)
				for i := start; i < min(start+int64(batch), g.n); i++ {
					t, err := g.trace(r, i)
					if err != nil {
						fail(err)
						return
					}
					b = append(b, t)
				}
				select {
				case gens[w] <- b:
				case <-ctx.Done():
					return
				}
			}
		}(w)
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
feed:
	for i := 0; ; i++ {
		b, ok := <-gens[i%workers]
		if !ok {
			break
		}
		select {
		case batches <- b:
		case <-ctx.Done():
			break feed
		}
		select {
		case <-tick.C:
			progress(written.Load())
		default:
		}
	}
	close(batches)
	wg.Wait()
	for _, c := range gens { // let generators blocked on a send exit
		for range c {
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return written.Load(), firstErr
}
