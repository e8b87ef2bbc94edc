// sarama_group: a sarama (Shopify/sarama 1.22, Debian's
// golang-github-shopify-sarama-dev) ConsumerGroup member for the Sluice test
// suite. It joins GROUP, consumes TOPIC until COUNT records arrived or the
// timeout passed, marks every record, closes the group (which commits), and
// prints one JSON summary line: {"records": [[partition, offset], ...], "claims": [...]}.
// Before that, one {"claims": [...]} line per generation it joined.
//
// Built without modules against Debian's Go library tree:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama_group ./tests/go/sarama_group
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type handler struct {
	mu      sync.Mutex
	records [][2]int64
	claims  []int32
	want    int
	done    context.CancelFunc
}

// Setup runs once per generation: it prints the partitions this member now
// owns as a line {"claims": [...]}, so a test can wait for the split.
func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.claims = h.claims[:0]
	for _, ps := range s.Claims() {
		h.claims = append(h.claims, ps...)
	}
	line, err := json.Marshal(map[string]interface{}{"claims": h.claims})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		s.MarkMessage(msg, "")
		h.mu.Lock()
		h.records = append(h.records, [2]int64{int64(msg.Partition), msg.Offset})
		n := len(h.records)
		h.mu.Unlock()
		if n >= h.want {
			h.done()
		}
	}
	return nil
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers, comma separated")
	group := flag.String("group", "", "consumer group id")
	topic := flag.String("topic", "", "topic")
	count := flag.Int("count", 0, "records to consume")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	flag.Parse()
	if *group == "" || *topic == "" || *count <= 0 {
		fmt.Fprintln(os.Stderr, "usage: sarama_group -brokers B -group G -topic T -count N")
		os.Exit(2)
	}

	cfg := sarama.NewConfig()
	cfg.ClientID = "sarama-group-test"
	cfg.Version = sarama.V2_0_0_0
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	// A retention makes sarama send OffsetCommit v2 (v1 without it), the
	// oldest version Kafka 4 and Sluice still take.
	cfg.Consumer.Offsets.Retention = time.Hour
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	cfg.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRange
	cfg.Metadata.Retry.Max = 10
	cfg.Metadata.Retry.Backoff = 200 * time.Millisecond

	cg, err := sarama.NewConsumerGroup(strings.Split(*brokers, ","), *group, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "new consumer group:", err)
		os.Exit(1)
	}
	go func() {
		for e := range cg.Errors() {
			fmt.Fprintln(os.Stderr, "consumer group error:", e)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	h := &handler{want: *count, done: cancel}
	for ctx.Err() == nil {
		// Consume returns at every rebalance; join again until done.
		if err := cg.Consume(ctx, []string{*topic}, h); err != nil {
			fmt.Fprintln(os.Stderr, "consume:", err)
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := cg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out, err := json.Marshal(map[string]interface{}{"records": h.records, "claims": h.claims})
	if err != nil {
		fmt.Fprintln(os.Stderr, "json:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
	if len(h.records) < *count {
		fmt.Fprintf(os.Stderr, "only %d of %d records before the timeout\n", len(h.records), *count)
		os.Exit(3)
	}
}
