// An R connection that parallel's cluster nodes carry as node$con, for
// future's backend: it asks socketSelect() whether a node has a reply.
// socketSelect() accepts only R's socket connections, and R can make those
// only over TCP; this one polls a descriptor of the pool's choosing (the
// worker's Unix socket, or one that is always ready while a reply already
// read waits), and opens no socket of its own.
#pragma once

#include <Rinternals.h>

extern "C" {

// A new connection polling `fd`. *fd_slot then points at the descriptor it
// polls, for the pool to change; it is set to null when R destroys the
// connection (close()), so the pool never writes to freed memory.
SEXP new_poll_connection(int fd, int** fd_slot);

// For a pool that stops while R still holds the connection: it polls
// `ready_fd`, which must stay open, from now on, and forgets the pool.
void detach_poll_connection(int* fd_slot, int ready_fd);

}
