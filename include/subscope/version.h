#ifndef SUBSCOPE_VERSION_H
#define SUBSCOPE_VERSION_H
#define SS_FORMAT_VERSION "1.1"
const char *ss_version(void);
const char *ss_git_commit(void);
#endif
