/* The poll connection of node_connection.h. C, not C++: R's connection
 * header names struct fields `class` and `private`.
 *
 * R's socketSelect() reads the descriptor to poll from the private data of
 * a connection whose class is "sockconn" or "servsockconn"; for the latter
 * it is the first field (an int) of that data (R's struct servsockconn).
 * So this connection says it is a "servsockconn" and keeps its descriptor
 * first. test-cluster.R checks socketSelect() on it, ready and not. */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Connections.h>

#include <stdlib.h>

#if R_CONNECTIONS_VERSION != 1
#error "bgpool knows R's connection interface version 1 only"
#endif

typedef struct {
  int fd; /* first: where socketSelect() looks */
  int **owner;
} poll_target;

static Rboolean poll_open(Rconnection con) {
  con->isopen = TRUE;
  return TRUE;
}

static void poll_close(Rconnection con) { con->isopen = FALSE; }

static void poll_destroy(Rconnection con) {
  poll_target *target = con->private;
  if (!target) return;
  if (target->owner && *target->owner == &target->fd) *target->owner = NULL;
  free(target);
  con->private = NULL;
}

SEXP new_poll_connection(int fd, int **fd_slot) {
  poll_target *target = malloc(sizeof *target);
  if (!target) Rf_error("bgpool: out of memory");
  Rconnection con;
  SEXP out = PROTECT(R_new_custom_connection("bgpool cluster node", "r", "servsockconn", &con));
  target->fd = fd;
  target->owner = fd_slot;
  con->private = target;
  con->isopen = TRUE;
  con->canread = TRUE;
  con->canwrite = FALSE;
  con->text = FALSE;
  con->open = poll_open;
  con->close = poll_close;
  con->destroy = poll_destroy;
  *fd_slot = &target->fd;
  UNPROTECT(1);
  return out;
}

void detach_poll_connection(int *fd_slot, int ready_fd) {
  poll_target *target = (poll_target *)fd_slot;
  target->fd = ready_fd;
  target->owner = NULL;
}
