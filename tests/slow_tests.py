"""The tests that ``pytest -m "not slow"`` (the quick subset, README "Set-up") leaves out.

conftest.py marks them ``slow`` at collection: every test with a mark of SLOW_MARKERS (the
real-browser and real-data tests) and the test functions named in SLOW (all their parameters but
the cases in QUICK),
each over about 2 s, measured file by file with ``pytest --durations=0 -p no:randomly`` on the
shared 2-core machine (issue 21; seconds in the comments are all of a function's parameters
together, under a load average of 2 to 11). Every test file keeps at least one quick test
(tests/test_suite_markers.py checks the names and that). The full suite, ``pytest``, runs all.
"""

SLOW_MARKERS = ("e2e", "real_data")

SLOW_FILES = ()  # files whose every test is slow (none: each keeps a quick one)

SLOW = {
    "test_app_links.py": (
        "test_no_link_shows_a_traceback_on_any_page",  # 18 s, 8 pages
        "test_every_in_app_link_carries_the_set_up_and_the_selection",  # 18 s: CIFAR-10 ResNet-20
        "test_hostile_link_values_warn_shortened_and_fall_back",  # 3.9 s
        "test_back_and_forward_restore_each_view_with_its_parameters",  # 2.4 s
    ),
    "test_app_pages.py": (
        "test_gaia_z_without_exact_zeros_is_said_next_to_its_numbers_on_every_page",  # 3.0 s
    ),
    "test_app_sessions.py": (
        "test_sessions_joining_a_running_evaluation_see_its_progress_and_its_table",  # 4.3 s
    ),
    "test_app_views.py": (
        "test_downloads_hold_the_layer_subset_shown_and_name_it",  # 9.6 s
        "test_random_weights_are_named_where_the_numbers_are",  # 2.7 s
        "test_the_kept_features_are_the_ones_a_separate_pass_gives",  # 2.2 s
        "test_the_data_map_after_an_evaluation_runs_no_forward_pass",  # 2.0 s
    ),
    "test_attribution.py": (
        "test_every_method_leaves_a_torchvision_resnet_as_found",  # 2.5 s, 7 methods
    ),
    "test_bad_input_app.py": (
        "test_inspect_good_odd_uploads_all_work",  # 9.2 s
        "test_inspect_bad_uploads_each_get_an_error_and_good_ones_still_load",  # 4.5 s
        "test_bad_checkpoints_show_errors_and_never_run_code",  # 2.6 s, 8 cases
    ),
    "test_bad_input_cli.py": (
        "test_sigkill_mid_evaluation_leaves_a_cache_the_next_run_uses",  # 160 s
        "test_bad_input_is_one_line_on_stderr_and_exit_2",  # 91 s, 9 subprocesses
        "test_odd_but_valid_input_works",  # 70 s, 4 subprocesses
    ),
    "test_bad_input_library.py": (
        "test_bad_checkpoints_raise_checkpoint_error",  # 6.1 s, 7 cases
        "test_model_with_a_conv_head",  # 2.5 s, 6 cases
        "test_model_without_norm_layers_falls_back_to_conv_with_a_warning",  # 2.5 s
        "test_loader_never_crashes_on_mutated_valid_files",  # 2.4 s, hypothesis
        "test_other_class_count_without_num_classes_builds_that_head",  # 2.2 s
    ),
    "test_benchmark_smoke.py": (
        "test_pipeline_benchmark_workers_row_runs",  # 11 s
        "test_quick_run_prints_rows_ratios_and_targets",  # 11 s
    ),
    "test_cli.py": (
        "test_demo_evaluation_end_to_end",  # 60 s
        "test_bad_input_is_one_line_and_exit_code_2",  # 43 s, 8 subprocesses
        "test_folder_sources_and_ood_transform",  # 17 s
    ),
    "test_demo.py": (
        "test_training_reproduces_an_accurate_small_checkpoint",  # 470 s under load: trains the CNN
    ),
    "test_structure.py": (
        "test_core_imports_without_streamlit_or_plotly",  # 10 s: a fresh interpreter
    ),
    "test_sweep.py": (
        "test_cancel_keeps_finished_chunks_and_resumes",  # 16 s
        "test_sweep_scores_equal_each_detector_alone",  # 16 s
        "test_second_run_is_a_cache_hit_and_settings_change_the_key",  # 15 s
        "test_exception_mid_run_keeps_chunks",  # 5.6 s
        "test_cuda_out_of_memory_halves_the_batch",  # 4.4 s
    ),
    "test_threshold.py": (
        "test_the_tune_page_snippet_and_config_work_as_shown",  # 18 s
        "test_config_records_the_setup_and_round_trips",  # 12 s
        "test_flagger_reproduces_the_evaluation_scores",  # 4.9 s, 4 cases
    ),
}

# Cases of a function in SLOW that stay quick, so their file keeps a quick test.
QUICK = {
    "test_bad_input_cli.py": (
        "test_bad_input_is_one_line_on_stderr_and_exit_2[negative --max-samples]",  # one subprocess
    ),
}


def is_slow(file_name: str, test_name: str, marks: set[str], case: str | None = None) -> bool:
    """Whether the test function ``test_name`` of ``file_name`` (a test file's name, e2e tests
    included) with the marks ``marks`` is left out of the quick subset; ``case`` is the test's
    name with its parameters, ``test_name[...]``."""
    if set(SLOW_MARKERS) & marks:
        return True
    if case is not None and case in QUICK.get(file_name, ()):
        return False
    return file_name in SLOW_FILES or test_name in SLOW.get(file_name, ())
