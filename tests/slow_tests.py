"""The tests that ``pytest -m "not slow"`` (the quick subset, README "Set-up") leaves out.

conftest.py marks them ``slow`` at collection: every test with a mark of SLOW_MARKERS (the
real-browser and real-data tests) and the test functions named in SLOW (all their parameters but
the cases in QUICK), each over about 2 s, measured file by file with ``pytest --durations=0 -p no:randomly`` on the
shared 2-core machine (issue 21; seconds in the comments are all of a function's parameters
together, under a load average of 2 to 11). Every test file keeps at least one quick test
(tests/test_suite_markers.py checks the names and that). The full suite, ``pytest``, runs all.
"""

SLOW_MARKERS = ("e2e", "real_data")

SLOW_FILES = ()  # files whose every test is slow (none: each keeps a quick one)

SLOW = {
    "test_app_inspect.py": (
        "test_inspect_researcher_controls_reach_the_attribution",  # 4.2 s in the quick run under load 4
    ),
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
    "test_densenet.py": (
        "test_gaia_scores_equal_a_per_sample_reference_with_every_batchnorm_hooked",  # 166 s: real DenseNet
        "test_msp_and_top1_of_every_image_equal_odins_code",  # 101 s
        "test_cli_evaluate_runs_as_written_in_the_issue",  # 46 s
        "test_app_model_picker_offers_it_with_the_shared_checkpoint",  # 6.6 s
        "test_gaia_default_layers_are_every_batchnorm_head_the_pooled_map",  # 4.2 s in the quick run under load 4
    ),
    "test_detectors_posthoc.py": (
        # the real ResNet-20 against pytorch-ood, one module fixture (94 s for the first of them)
        "test_activation_shaping_equals_pytorch_ood",
        "test_vim_fdbd_nnguide_dice_equal_pytorch_ood",
        "test_gen_equals_pytorch_ood_up_to_its_mean_and_clamp",
    ),
    "test_distributed.py": (
        "test_a_killed_rank_loses_only_its_unfinished_chunk_and_the_rerun_resumes",  # 55 s: gloo ranks
        "test_two_gloo_ranks_give_the_scores_of_one_process",  # 44 s
    ),
    "test_edges.py": (
        "test_all_methods_finish_and_every_method_that_can_run_is_scored",  # 72 s, 4 models
        "test_cli_says_each_cause_once_on_a_run_of_all_methods",  # 29 s
        "test_cli_prints_the_fallback_and_chance_notes_once",  # 27 s
        "test_cli_and_app_give_levits_real_reason",  # 26 s
        "test_cli_prints_the_all_zero_note_as_one_warning_line",  # 24 s
        "test_sweep_records_the_all_zero_note_once",  # 16 s
        "test_gaia_on_a_token_model_is_left_out_and_msp_is_scored",  # 13 s
        "test_cli_prints_the_non_finite_note_and_writes_null_metrics",  # 13 s
        "test_all_zero_gradients_are_not_called_smooth_activations",  # 8.9 s, 2 cases
        "test_conv_fallback_warns_once_per_call_and_once_per_evaluation",  # 8.9 s
        "test_app_shows_why_gaia_a_is_na_where_its_numbers_would_be",  # 8.8 s
        "test_app_says_why_a_method_is_left_out_where_its_numbers_would_be",  # 7.2 s
        "test_model_outputs_with_unambiguous_logits_are_accepted",  # 6.6 s, 5 cases
        "test_gaia_a_with_a_uniform_softmax_says_why_it_is_not_finite",  # 6.3 s
        "test_gaia_a_on_squeezenet_is_left_out_with_its_layer_error",  # 4.7 s
        "test_conv2d_subclasses_count_as_convolutions_in_the_fallback",  # 4.7 s
        "test_sweep_names_the_method_count_and_reason_and_its_metrics_are_na",  # 4.4 s
        "test_gaia_a_with_a_cut_head_layer_names_that_cause_not_a_uniform_softmax",  # 4.0 s
        "test_the_fallback_does_not_hook_squeezenets_class_score_conv",  # 3.8 s
        "test_cli_exits_2_when_no_method_can_run",  # 3.3 s
        "test_cli_names_the_left_out_method_next_to_the_numbers",  # 7.9 s in the quick run under load 4 (2.7 s alone)
    ),
    "test_faults.py": (
        "test_outputs_on_a_full_disk_leave_the_previous_outputs_intact",  # 4.5 s
    ),
    "test_figures_scores.py": (
        "test_negated_scores_say_so_on_the_axis",  # 5.3 s
    ),
    "test_gaia.py": (
        "test_gaia_a_equals_reference",  # 33 s, 3 models
        "test_gaia_z_equals_reference_exactly",  # 9.0 s, 3 models
        "test_batch_independence",  # 5.8 s
        "test_backward_shortcuts_match_plain_autograd",  # 4.7 s, 3 cases
        "test_inplace_relu_scores_like_out_of_place",  # 3.9 s
        "test_threads_sharing_one_model_do_not_see_each_others_hooks",  # 4.5 s in the quick run under load 4
        "test_model_left_exactly_as_found_and_no_parameter_grads",  # 4.0 s in the quick run under load 4
    ),
    "test_integrations.py": (
        "test_oodmetrics_over_the_detector_equal_the_sweep",  # 11 s: the real ResNet-20
        "test_core_imports_without_pytorch_ood_or_captum_and_the_integrations_say_what_to_install",  # 3.4 s: a fresh interpreter
    ),
    "test_loader.py": (
        "test_workers_give_identical_scores_with_batches_inside_chunks",  # 9.6 s: worker processes
        "test_a_bad_file_inside_a_worker_gives_the_main_process_message",  # 4.1 s: worker processes
    ),
    "test_model_families.py": (
        "test_support_table_row_is_what_gaia_measures",  # 150 s, 6 families
        "test_timm_models_against_brute_force",  # 50 s, 2 models
        "test_bit_matches_its_formulas_with_the_papers_default_layers",  # 27 s
        "test_bit_checkpoints_round_trip_in_gradnorm_and_big_transfer_formats",  # 27 s
        "test_cli_prints_one_line_and_writes_the_note_to_metrics_json",  # 23 s
        "test_sweep_records_the_note_and_the_app_can_read_it",  # 19 s
        "test_token_models_are_refused_for_gaia_and_scored_by_the_others",  # 16 s, 2 models
        "test_torchvision_weights_load_like_torchvision_itself",  # 11 s, 3 models
        "test_smooth_activations_warn_that_gaia_z_has_no_exact_zeros",  # 11 s, 2 models
        "test_relu_model_gives_no_warning",  # 5.9 s
        "test_fused_groupnorm_act_scores_like_unfused_timm_resnetv2",  # 5.7 s
    ),
    "test_models.py": (
        "test_cifar_resnet_parameter_counts_match_he_et_al",  # 10 s, 5 depths
        "test_resnet20_is_accurate_on_real_cifar10_images",  # 2.9 s: real CIFAR-10
        "test_checkpoint_round_trips",  # 2.8 s, 8 formats
    ),
    "test_launcher.py": (
        "test_torch_is_loaded_before_any_visitor_connects",  # 6 s: a real server start
    ),
    "test_progress_eta.py": (
        "test_the_sweep_starts_the_clock_before_its_first_chunk",  # 13 s
    ),
    "test_served_paths.py": (
        "test_cli_refuses_control_characters_and_long_paths_in_one_line",  # 65 s, 4 subprocesses
        "test_cli_demo_refuses_the_users_sets_in_one_line",  # 52 s, 4 subprocesses
        "test_app_refuses_hostile_path_text_with_one_short_error",  # 28 s, 6 cases
        "test_cli_scores_a_folder_of_symlink_loops",  # 12 s
        "test_cli_honours_the_allowed_roots_setting",  # 11 s
        "test_app_scores_a_folder_of_symlink_loops",  # 6.7 s, 2 modes
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
