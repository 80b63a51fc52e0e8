//! The whole account behind one endpoint: requests for the move's bucket go to the
//! gateway ([`super::s3::Gateway`]); requests for any other bucket (and the bucket
//! list) go to the destination as they are, through `s3s-aws`'s proxy with barge's
//! destination credentials, once the client's own signature was verified.

use s3s::dto;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use super::s3::Gateway;

/// The S3 service the listener answers with.
pub struct Front {
    pub gateway: Gateway,
    /// The destination's S3 API (None: a destination that is not S3; other buckets
    /// answer NoSuchBucket).
    pub proxy: Option<s3s_aws::Proxy>,
    pub bucket: String,
}

impl Front {
    /// Where a request for `bucket` goes: the gateway, or the destination's proxy.
    fn other(&self, bucket: &str) -> S3Result<&s3s_aws::Proxy> {
        self.proxy.as_ref().ok_or_else(|| {
            s3_error!(
                NoSuchBucket,
                "{bucket}: this gateway serves bucket {} (the destination is not S3)",
                self.bucket
            )
        })
    }
}

/// Refuses unsigned requests before they reach either side.
fn signed<T>(req: &S3Request<T>) -> S3Result<()> {
    match req.credentials {
        Some(_) => Ok(()),
        None => Err(s3_error!(AccessDenied, "requests must be signed")),
    }
}

/// One method per S3 operation that names a bucket: the move's bucket to the gateway,
/// any other to the destination.
macro_rules! routed {
    ($($op:ident: $input:ident => $output:ident;)*) => {
        #[async_trait::async_trait]
        impl S3 for Front {
            $(
                async fn $op(
                    &self,
                    req: S3Request<dto::$input>,
                ) -> S3Result<S3Response<dto::$output>> {
                    signed(&req)?;
                    if req.input.bucket == self.bucket {
                        return self.gateway.$op(req).await;
                    }
                    let bucket = req.input.bucket.clone();
                    self.other(&bucket)?.$op(req).await
                }
            )*

            async fn list_buckets(
                &self,
                req: S3Request<dto::ListBucketsInput>,
            ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
                signed(&req)?;
                match &self.proxy {
                    Some(p) => p.list_buckets(req).await,
                    None => Ok(S3Response::new(dto::ListBucketsOutput {
                        buckets: Some(vec![dto::Bucket {
                            name: Some(self.bucket.clone()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    })),
                }
            }
        }
    };
}

routed! {
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
    copy_object: CopyObjectInput => CopyObjectOutput;
    create_bucket: CreateBucketInput => CreateBucketOutput;
    create_bucket_metadata_table_configuration: CreateBucketMetadataTableConfigurationInput => CreateBucketMetadataTableConfigurationOutput;
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
    create_session: CreateSessionInput => CreateSessionOutput;
    delete_bucket: DeleteBucketInput => DeleteBucketOutput;
    delete_bucket_analytics_configuration: DeleteBucketAnalyticsConfigurationInput => DeleteBucketAnalyticsConfigurationOutput;
    delete_bucket_cors: DeleteBucketCorsInput => DeleteBucketCorsOutput;
    delete_bucket_encryption: DeleteBucketEncryptionInput => DeleteBucketEncryptionOutput;
    delete_bucket_intelligent_tiering_configuration: DeleteBucketIntelligentTieringConfigurationInput => DeleteBucketIntelligentTieringConfigurationOutput;
    delete_bucket_inventory_configuration: DeleteBucketInventoryConfigurationInput => DeleteBucketInventoryConfigurationOutput;
    delete_bucket_lifecycle: DeleteBucketLifecycleInput => DeleteBucketLifecycleOutput;
    delete_bucket_metadata_table_configuration: DeleteBucketMetadataTableConfigurationInput => DeleteBucketMetadataTableConfigurationOutput;
    delete_bucket_metrics_configuration: DeleteBucketMetricsConfigurationInput => DeleteBucketMetricsConfigurationOutput;
    delete_bucket_ownership_controls: DeleteBucketOwnershipControlsInput => DeleteBucketOwnershipControlsOutput;
    delete_bucket_policy: DeleteBucketPolicyInput => DeleteBucketPolicyOutput;
    delete_bucket_replication: DeleteBucketReplicationInput => DeleteBucketReplicationOutput;
    delete_bucket_tagging: DeleteBucketTaggingInput => DeleteBucketTaggingOutput;
    delete_bucket_website: DeleteBucketWebsiteInput => DeleteBucketWebsiteOutput;
    delete_object: DeleteObjectInput => DeleteObjectOutput;
    delete_object_tagging: DeleteObjectTaggingInput => DeleteObjectTaggingOutput;
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
    delete_public_access_block: DeletePublicAccessBlockInput => DeletePublicAccessBlockOutput;
    get_bucket_accelerate_configuration: GetBucketAccelerateConfigurationInput => GetBucketAccelerateConfigurationOutput;
    get_bucket_acl: GetBucketAclInput => GetBucketAclOutput;
    get_bucket_analytics_configuration: GetBucketAnalyticsConfigurationInput => GetBucketAnalyticsConfigurationOutput;
    get_bucket_cors: GetBucketCorsInput => GetBucketCorsOutput;
    get_bucket_encryption: GetBucketEncryptionInput => GetBucketEncryptionOutput;
    get_bucket_intelligent_tiering_configuration: GetBucketIntelligentTieringConfigurationInput => GetBucketIntelligentTieringConfigurationOutput;
    get_bucket_inventory_configuration: GetBucketInventoryConfigurationInput => GetBucketInventoryConfigurationOutput;
    get_bucket_lifecycle_configuration: GetBucketLifecycleConfigurationInput => GetBucketLifecycleConfigurationOutput;
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
    get_bucket_logging: GetBucketLoggingInput => GetBucketLoggingOutput;
    get_bucket_metadata_table_configuration: GetBucketMetadataTableConfigurationInput => GetBucketMetadataTableConfigurationOutput;
    get_bucket_metrics_configuration: GetBucketMetricsConfigurationInput => GetBucketMetricsConfigurationOutput;
    get_bucket_notification_configuration: GetBucketNotificationConfigurationInput => GetBucketNotificationConfigurationOutput;
    get_bucket_ownership_controls: GetBucketOwnershipControlsInput => GetBucketOwnershipControlsOutput;
    get_bucket_policy: GetBucketPolicyInput => GetBucketPolicyOutput;
    get_bucket_policy_status: GetBucketPolicyStatusInput => GetBucketPolicyStatusOutput;
    get_bucket_replication: GetBucketReplicationInput => GetBucketReplicationOutput;
    get_bucket_request_payment: GetBucketRequestPaymentInput => GetBucketRequestPaymentOutput;
    get_bucket_tagging: GetBucketTaggingInput => GetBucketTaggingOutput;
    get_bucket_versioning: GetBucketVersioningInput => GetBucketVersioningOutput;
    get_bucket_website: GetBucketWebsiteInput => GetBucketWebsiteOutput;
    get_object: GetObjectInput => GetObjectOutput;
    get_object_acl: GetObjectAclInput => GetObjectAclOutput;
    get_object_attributes: GetObjectAttributesInput => GetObjectAttributesOutput;
    get_object_legal_hold: GetObjectLegalHoldInput => GetObjectLegalHoldOutput;
    get_object_lock_configuration: GetObjectLockConfigurationInput => GetObjectLockConfigurationOutput;
    get_object_retention: GetObjectRetentionInput => GetObjectRetentionOutput;
    get_object_tagging: GetObjectTaggingInput => GetObjectTaggingOutput;
    get_object_torrent: GetObjectTorrentInput => GetObjectTorrentOutput;
    get_public_access_block: GetPublicAccessBlockInput => GetPublicAccessBlockOutput;
    head_bucket: HeadBucketInput => HeadBucketOutput;
    head_object: HeadObjectInput => HeadObjectOutput;
    list_bucket_analytics_configurations: ListBucketAnalyticsConfigurationsInput => ListBucketAnalyticsConfigurationsOutput;
    list_bucket_intelligent_tiering_configurations: ListBucketIntelligentTieringConfigurationsInput => ListBucketIntelligentTieringConfigurationsOutput;
    list_bucket_inventory_configurations: ListBucketInventoryConfigurationsInput => ListBucketInventoryConfigurationsOutput;
    list_bucket_metrics_configurations: ListBucketMetricsConfigurationsInput => ListBucketMetricsConfigurationsOutput;
    list_multipart_uploads: ListMultipartUploadsInput => ListMultipartUploadsOutput;
    list_object_versions: ListObjectVersionsInput => ListObjectVersionsOutput;
    list_objects: ListObjectsInput => ListObjectsOutput;
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
    list_parts: ListPartsInput => ListPartsOutput;
    put_bucket_accelerate_configuration: PutBucketAccelerateConfigurationInput => PutBucketAccelerateConfigurationOutput;
    put_bucket_acl: PutBucketAclInput => PutBucketAclOutput;
    put_bucket_analytics_configuration: PutBucketAnalyticsConfigurationInput => PutBucketAnalyticsConfigurationOutput;
    put_bucket_cors: PutBucketCorsInput => PutBucketCorsOutput;
    put_bucket_encryption: PutBucketEncryptionInput => PutBucketEncryptionOutput;
    put_bucket_intelligent_tiering_configuration: PutBucketIntelligentTieringConfigurationInput => PutBucketIntelligentTieringConfigurationOutput;
    put_bucket_inventory_configuration: PutBucketInventoryConfigurationInput => PutBucketInventoryConfigurationOutput;
    put_bucket_lifecycle_configuration: PutBucketLifecycleConfigurationInput => PutBucketLifecycleConfigurationOutput;
    put_bucket_logging: PutBucketLoggingInput => PutBucketLoggingOutput;
    put_bucket_metrics_configuration: PutBucketMetricsConfigurationInput => PutBucketMetricsConfigurationOutput;
    put_bucket_notification_configuration: PutBucketNotificationConfigurationInput => PutBucketNotificationConfigurationOutput;
    put_bucket_ownership_controls: PutBucketOwnershipControlsInput => PutBucketOwnershipControlsOutput;
    put_bucket_policy: PutBucketPolicyInput => PutBucketPolicyOutput;
    put_bucket_replication: PutBucketReplicationInput => PutBucketReplicationOutput;
    put_bucket_request_payment: PutBucketRequestPaymentInput => PutBucketRequestPaymentOutput;
    put_bucket_tagging: PutBucketTaggingInput => PutBucketTaggingOutput;
    put_bucket_versioning: PutBucketVersioningInput => PutBucketVersioningOutput;
    put_bucket_website: PutBucketWebsiteInput => PutBucketWebsiteOutput;
    put_object: PutObjectInput => PutObjectOutput;
    put_object_acl: PutObjectAclInput => PutObjectAclOutput;
    put_object_legal_hold: PutObjectLegalHoldInput => PutObjectLegalHoldOutput;
    put_object_lock_configuration: PutObjectLockConfigurationInput => PutObjectLockConfigurationOutput;
    put_object_retention: PutObjectRetentionInput => PutObjectRetentionOutput;
    put_object_tagging: PutObjectTaggingInput => PutObjectTaggingOutput;
    put_public_access_block: PutPublicAccessBlockInput => PutPublicAccessBlockOutput;
    restore_object: RestoreObjectInput => RestoreObjectOutput;
    select_object_content: SelectObjectContentInput => SelectObjectContentOutput;
    upload_part: UploadPartInput => UploadPartOutput;
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
}

/// `--domain`: a request whose Host is `BUCKET.DOMAIN` (any port) names its bucket there
/// (virtual-host style); any other Host is path style. (s3s's own `SingleDomain` would
/// take any other host name for a bucket's CNAME, `localhost:9000` included.)
pub struct Domain(String);

impl Domain {
    pub fn new(d: &str) -> crate::Result<Self> {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        let label =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        match d.split('.').all(label) {
            true => Ok(Domain(d)),
            false => Err(crate::Error::Option {
                option: format!("--domain {d}"),
                message: "not a DNS name (letters, digits, '-' and dots)".into(),
            }),
        }
    }
}

impl s3s::host::S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() => h,
            _ => host,
        };
        let bucket = name
            .strip_suffix(self.0.as_str())
            .and_then(|h| h.strip_suffix('.'))
            .filter(|b| !b.is_empty());
        let vh = s3s::host::VirtualHost::new(self.0.as_str());
        Ok(match bucket {
            Some(b) => vh.with_bucket(b),
            None => vh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::host::S3Host;

    #[test]
    fn a_host_under_the_domain_names_its_bucket_any_other_is_path_style() {
        let d = Domain::new("S3.Example.test.").unwrap();
        let b = |h: &str| d.parse_host_header(h).unwrap().bucket().map(str::to_string);
        assert_eq!(b("photos.s3.example.test:9000").as_deref(), Some("photos"));
        assert_eq!(b("a.b.s3.example.test").as_deref(), Some("a.b"));
        assert_eq!(b("s3.example.test:9000"), None);
        assert_eq!(b("localhost:9000"), None);
        assert_eq!(b("evil-s3.example.test"), None);
        assert!(Domain::new("bad domain").is_err());
        assert!(Domain::new("").is_err());
    }
}
