# lme4 references for R's formula language in lmmfast (issue 9, item 2): each spelling fitted
# by lme4 1.1-31, with lme4's coefficient names, values and objective.
# usage (from this folder): Rscript refs_formula_language.R
# writes: data/<name>.csv (the data sets, exported from R packages, small) and
#         refs_formula_language.json: per model its data, formula, REML, contrasts and lme4's
#         objective (REMLcrit or deviance), fixef (names and values), sigma, theta and the
#         names of the grouping factors; per data set the factor columns with R's levels
#         (so that Python gives them the same levels, in the same order).
# The fits use the data as read back from the CSV files, so both sides see the same rows.
suppressMessages({library(lme4); library(mlmRev); library(jsonlite)})
dir.create("data", showWarnings = FALSE)
data(BodyWeight, package = "nlme"); data(Orthodont, package = "nlme")
sleep <- as.data.frame(sleepstudy)
sleep$Days.c <- sleep$Days - 4.5
sleep$late <- sleep$Days > 4
hsb <- Hsb82[Hsb82$school %in% levels(Hsb82$school)[seq(1, 160, by = 10)], ]
hsb <- data.frame(School = droplevels(hsb$school), MathAch = hsb$mAch, cSES = hsb$cses,
                  Sector = hsb$sector)
cake2 <- as.data.frame(cake)
sets <- list(
  cbpp = as.data.frame(cbpp),
  arabidopsis = as.data.frame(Arabidopsis)[, c("reg", "popu", "gen", "rack", "nutrient", "amd", "total.fruits")],
  bodyweight = data.frame(weight = BodyWeight$weight, Time = BodyWeight$Time,
                          Rat = factor(as.character(BodyWeight$Rat)), Diet = BodyWeight$Diet),
  hsb = hsb,
  sleep = sleep,
  cake = cake2,
  orthodont = data.frame(distance = Orthodont$distance, age = Orthodont$age,
                         Subject = factor(as.character(Orthodont$Subject)), Sex = Orthodont$Sex)
)
data <- list(); factors <- list()
for (name in names(sets)) {
  d <- sets[[name]]
  write.csv(d, file.path("data", paste0(name, ".csv")), row.names = FALSE)
  back <- read.csv(file.path("data", paste0(name, ".csv")), check.names = FALSE)
  fl <- list()
  for (v in names(d)) if (is.factor(d[[v]])) {
    back[[v]] <- factor(as.character(back[[v]]), levels = levels(d[[v]]), ordered = is.ordered(d[[v]]))
    fl[[v]] <- list(levels = levels(d[[v]]), ordered = is.ordered(d[[v]]))
  }
  data[[name]] <- back; factors[[name]] <- fl
}
models <- list(
  cbpp_ratio_response = list("cbpp", "incidence/size ~ period + (1 | herd)"),
  cbpp_offset_call = list("cbpp", "incidence ~ period + offset(log(size)) + (1 | herd)"),
  arabidopsis_dotted_nested = list("arabidopsis", "log(1 + total.fruits) ~ nutrient + amd + rack + (1 | reg/popu/gen)"),
  sleep_dotted_I = list("sleep", "Reaction ~ Days.c + I(Days.c^2) + (1 | Subject)"),
  sleep_sqrt_log1p_cos = list("sleep", "Reaction ~ sqrt(Days) + log1p(Days) + cos(Days) + (1 | Subject)"),
  sleep_logbase_exp_ifelse = list("sleep", "log(Reaction, 2) ~ exp(Days/64) + ifelse(Days > 4, 1, 0) + (1 | Subject)"),
  sleep_asnumeric_pmin_pmax = list("sleep", "Reaction ~ as.numeric(Days > 3) + pmin(Days, 5) + pmax(Days, 2) + (1 | Subject)"),
  sleep_abs_log10_log2_exp = list("sleep", "Reaction ~ abs(Days - 4) + log10(Days + 1) + log2(Days + 2) + exp(-Days) + (1 | Subject)"),
  sleep_sin_tan_round_floor_ceiling = list("sleep", "Reaction ~ sin(Days) + tan(Days/10) + round(Days/3) + floor(Days/2) + ceiling(Days/4) + (1 | Subject)"),
  sleep_logical_column = list("sleep", "Reaction ~ late + (Days | Subject)"),
  sleep_poly = list("sleep", "Reaction ~ poly(Days, 3) + (Days | Subject)"),
  sleep_scale = list("sleep", "Reaction ~ scale(Days) + (1 | Subject)"),
  sleep_factor = list("sleep", "Reaction ~ factor(Days) + (1 | Subject)"),
  bodyweight_in = list("bodyweight", "weight ~ Time %in% Diet + (1 | Rat)"),
  bodyweight_nest = list("bodyweight", "weight ~ Diet/Time + (1 | Rat)"),
  bodyweight_exp_logical = list("bodyweight", "weight ~ exp(Time/64) + I(Time > 30) + (1 | Rat)"),
  hsb_interaction_order = list("hsb", "MathAch ~ cSES + Sector + Sector:cSES + (1 | School)"),
  cake_sum = list("cake", "angle ~ recipe * temp + (1 | replicate)", list(recipe = "contr.sum")),
  cake_helmert = list("cake", "angle ~ recipe + temp + (1 | replicate)", list(recipe = "contr.helmert")),
  cake_poly_contrast = list("cake", "angle ~ recipe + temp + (1 | replicate)", list(recipe = "contr.poly")),
  cake_ordered = list("cake", "angle ~ recipe + temperature + (1 | replicate)"),
  cake_C_sum = list("cake", "angle ~ C(recipe, sum) + temp + (1 | replicate)"),
  cake_indicator_interaction = list("cake", "angle ~ temp:recipe + (1 | replicate)"),
  cake_power_minus = list("cake", "angle ~ (recipe + temp)^2 - temp + (1 | replicate)"),
  cake_no_intercept = list("cake", "angle ~ 0 + recipe + temp + (1 | replicate)"),
  cake_relevel = list("cake", "angle ~ relevel(recipe, ref = \"C\") + temp + (1 | replicate)"),
  orthodont_levels = list("orthodont", "distance ~ age * Sex + (age | Subject)")
)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
res <- list()
for (id in names(models)) {
  m <- models[[id]]
  contr <- if (length(m) > 2) m[[3]] else NULL
  f <- lme4::lmer(as.formula(m[[2]]), data = data[[m[[1]]]], contrasts = contr, control = ctrl)
  res[[id]] <- list(data = m[[1]], formula = m[[2]], REML = TRUE,
    contrasts = if (is.null(contr)) structure(list(), names = character()) else contr,
    objective = REMLcrit(f), fixef_names = I(names(fixef(f))), fixef = I(unname(fixef(f))),
    sigma = sigma(f), theta = I(unname(getME(f, "theta"))), groups = I(names(ngrps(f))))
}
# R's deparse() (how a variable is named) and terms() (which terms, in which order, labelled how)
exprs <- c("a/b", "a^b", "a*b", "a-b", "-a", "a>b", "a==b", "a%%b", "a%/%b", "a&b", "!a",
  "a:b", "(a+b)*c", "1e3", "0.5", "2L", "'s'", "f(a,b=2)", "a %in% b", "a<=b", "1e-10",
  "100000", "123456789", "0.1+0.2", "x.y^2", "-(a)", "a|b", "1e5", "1e15", "3.14159265358979",
  "0.0001", "exp(Time/64)", "I(Time>30)", "log(1+total.fruits)", "log(x,2)", "x**2",
  "-2^2", "ifelse(x>3,1,0)", "`a b`+c", "relevel(f,ref='c')", "poly(x,2,raw=TRUE)", "1.5e-8",
  "2.5", "250", "1e-3", "-1:2", "a:b*c", "!a&b", "x - -1")
deparsed <- setNames(lapply(exprs, function(e) deparse(str2lang(e))), exprs)
rhs <- c("a*b*c - a:b", "(a+b+c)^2", "a/b", "b %in% a", "a + b %in% a", "(a+b) %in% c",
  "(a+b)/c", "a/(b+c)", "a*b + b:a:c - 1", "b:a + a", "cSES + Sector + Sector:cSES",
  "I(a+b) + log(x):b", "0 + a", "a + 0", "a - 1 + 1", "poly(x, 2)*f", "(a + b)^2 - b",
  "a*b - 1", "Time %in% Diet", "Diet/Time", "c:b + b:a + a", "x:f + g:f + x")
term_info <- lapply(rhs, function(r) {
  t <- terms(as.formula(paste("y ~", r)))
  list(labels = I(attr(t, "term.labels")), intercept = attr(t, "intercept"))
})
names(term_info) <- rhs
# model.matrix on a small synthetic frame: column names and values (TermCode, contrasts, poly)
set.seed(1)
syn <- data.frame(x = round(rnorm(20), 3), z = round(runif(20, 1, 5), 3),
                  f = factor(rep(c("a", "b", "c", "d", "e"), 4)), g = factor(rep(c("u", "v"), each = 10)),
                  o = factor(rep(c("lo", "mid", "hi", "top"), 5), levels = c("lo", "mid", "hi", "top"), ordered = TRUE))
write.csv(syn, file.path("data", "synthetic.csv"), row.names = FALSE)
factors$synthetic <- list(f = list(levels = levels(syn$f), ordered = FALSE),
  g = list(levels = levels(syn$g), ordered = FALSE), o = list(levels = levels(syn$o), ordered = TRUE))
syn <- read.csv(file.path("data", "synthetic.csv"))
syn$f <- factor(syn$f); syn$g <- factor(syn$g)
syn$o <- factor(syn$o, levels = c("lo", "mid", "hi", "top"), ordered = TRUE)
mm_rhs <- c("x + x:f + g:f", "0 + x + f:g", "f:g", "poly(x, 2)*f", "f*g - f", "0 + f*g",
  "o + g", "0 + o", "x %in% f", "f/x", "(f + g + x)^2", "poly(z, 3, raw = TRUE) + scale(x)",
  "log(z, 2):g + sqrt(z)", "I(x > 0) * g", "C(f, helmert):x", "C(o, treatment) + ordered(g)",
  "relevel(f, ref = \"c\"):g", "ifelse(x > 0, \"pos\", \"neg\") + pmin(z, 3)", "x*z*g")
mm <- lapply(mm_rhs, function(r) {
  M <- model.matrix(as.formula(paste("~", r)), syn)
  list(names = I(colnames(M)), values = unname(M))
})
names(mm) <- mm_rhs

# factor()'s level order for strings (R sorts in its collation, here ICU in C.UTF-8)
words <- c("b", "B", "a", "A", "_x", "1", "a1", "a10", "a2", "Zeta", "zeta", "a-b", "ab", "A b",
  "10", "9", "x.y", "x_y", "xy", "Catholic", "Public", "male", "Female")
out <- list(lme4 = as.character(packageVersion("lme4")), models = res, factors = factors,
            deparse = deparsed, terms = term_info, model_matrix = mm, collation = list(words = I(words),
            levels = I(levels(factor(words)))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "refs_formula_language.json")
cat("wrote refs_formula_language.json and data/\n")
