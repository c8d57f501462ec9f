// Package stream relays server-sent event streams: it splits an upstream's
// text/event-stream body into events, writes each to the client and flushes at once (no
// buffering of the answer), and on the way reads the usage and served model of OpenAI
// chat completion chunks, drops the usage chunk a client did not ask for, and keeps a
// bounded copy of the stream for the trace.
package stream
