#include "subscope/version.h"

#ifndef SS_VERSION
#define SS_VERSION "0.0.0"
#endif
#ifndef SS_GIT_COMMIT
#define SS_GIT_COMMIT "unknown"
#endif

const char *ss_version(void) { return SS_VERSION; }
const char *ss_git_commit(void) { return SS_GIT_COMMIT; }
