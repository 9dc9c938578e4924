/* `report`: one self-contained HTML page from `ablate` outputs: per
 * sub-model impairment-vs-intensity curves per topic (label), a
 * topic-specificity index compared with the index of random control masks,
 * and a verdict per sub-model. */
#ifndef SUBSCOPE_REPORT_H
#define SUBSCOPE_REPORT_H

#include <stdio.h>
#include "subscope/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The index's floor for the other topics' impairments:
 *   eps = max(SS_REPORT_EPS_ABS, SS_REPORT_EPS_REL * impair[target])
 * so a sub-model that leaves every other topic untouched scores at most
 * 1 / SS_REPORT_EPS_REL = 100, and effects below ~1e-3 of the metric's
 * units never count as specific. */
#define SS_REPORT_EPS_ABS 1e-3
#define SS_REPORT_EPS_REL 0.01
/* The verdict's thresholds: index >= SS_REPORT_MIN_INDEX and index >
 * mean + SS_REPORT_CTRL_SDS * sd of the controls' indices, with at least
 * SS_REPORT_MIN_CONTROLS finite control indices. */
#define SS_REPORT_MIN_INDEX 3.0
#define SS_REPORT_CTRL_SDS 2.0
#define SS_REPORT_MIN_CONTROLS 2
/* ... and the target topic's impairment at least this fraction of its clean
 * value (and SS_REPORT_EPS_ABS): a large ratio of negligible effects is not
 * reported as specific. */
#define SS_REPORT_MIN_EFFECT 0.01

/* Topic-specificity index of one setting from its impairment per topic
 * (positive = worse; NaN entries, topics without prompts, are left out):
 * target = the topic with the largest impairment (the first on ties),
 *   index = impair[target] / mean over the other topics l of max(impair[l], eps)
 * and 0 when impair[target] <= 0. NaN (target -1) with fewer than two
 * finite topics. */
double ss_report_index(const double *impair, int n, int *target);

typedef enum ss_report_verdict {
    SS_VERDICT_NONE,      /* no topic-specific effect */
    SS_VERDICT_SPECIFIC,  /* topic-specific to the target */
    SS_VERDICT_UNTESTED,  /* index >= SS_REPORT_MIN_INDEX but too few controls to compare with */
    SS_VERDICT_ONE_TOPIC  /* fewer than two topics: no index */
} ss_report_verdict;

/* The verdict for index against the controls' indices (NaN ones left
 * out); *mean and *sd (sample sd, n - 1; 0 for one value; NaN for none)
 * and *n_used describe the controls. */
ss_report_verdict ss_report_judge(double index, const double *ctrl_index, int n_ctrl, double *mean, double *sd,
                                  int *n_used);

typedef struct ss_report_job {
    const char *const *inputs;  /* ablate output files */
    int n_inputs;
    const char *out;            /* HTML path; written as <out>.tmp.<host>.<pid> (beside the file a link names), renamed when complete */
    const char *metric;         /* loss (NULL), acc, keyword, logitdiff or kl */
    const char *title;          /* page title (NULL: "subscope report") */
    FILE *summary;              /* one line per sub-model (NULL: none) */
} ss_report_job;

ss_status ss_job_report(const ss_report_job *job);

#ifdef __cplusplus
}
#endif
#endif
